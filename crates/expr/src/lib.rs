//! Requirement and rank expressions over node attributes, such as
//! `cores >= 4 && arch == "x86_64"` or `free_memory_mb`.
