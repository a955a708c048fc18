//! Guest images: the stock guest built from Debian packages, and imported
//! user disks.
