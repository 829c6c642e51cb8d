//! (crate under construction in this session)
