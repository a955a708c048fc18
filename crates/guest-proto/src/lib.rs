//! What the guest agent and the host say to each other.
