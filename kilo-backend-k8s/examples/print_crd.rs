//! Prints the Peer CRD manifest.
fn main() {
    print!("{}", kilo_backend_k8s::crd_yaml());
}
