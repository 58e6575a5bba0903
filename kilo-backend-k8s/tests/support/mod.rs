//! Test support: a fake Kubernetes API server and object builders.
#![allow(dead_code)]

pub mod apiserver;
