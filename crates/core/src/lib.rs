//! The vgrid scheduling core: a pure state machine.
//!
//! It holds the model (nodes, domains, jobs, reservations) and makes every
//! scheduling decision. It does no IO, reads no clock and starts no thread:
//! drivers (the live controller, the simulator) feed it events with the
//! current time and carry out the actions it returns.
