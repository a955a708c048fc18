//! Reader for the Standard Workload Format (SWF) of the Parallel Workloads
//! Archive, plain or gzipped.
