//! What the fuzz targets share: a real daemon for the API router target, and a DNS
//! upstream on loopback for the responder target.

pub mod daemon;
pub mod upstream;
