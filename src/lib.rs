//! walship facade
