//! `container`: Docker's `--network container:<id>` as a CNI plugin.
fn main() {
    cni::skel::run(
        &container::Container,
        "CNI container plugin: join another sandbox's network namespace (Docker --network container:<id>)",
    )
}
