//! The trace simulator: drives `vgrid-core` in virtual time from SWF traces.
