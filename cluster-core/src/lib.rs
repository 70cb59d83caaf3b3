//! The bundled cluster core: pure knowledge about the Mesos stack.
//!
//! No I/O happens here beyond parsing embedded files. The engine (`provisioner`)
//! consumes these types to validate topology and order rollouts.

pub mod topology;
