//! Test support: a fake Kubernetes API server (copied from `kilo-backend-k8s/tests/support`).
#![allow(dead_code)]

pub mod apiserver;
