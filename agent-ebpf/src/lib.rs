// Empty on purpose: lets agent-userspace name this crate as a build-dependency.
#![no_std]
