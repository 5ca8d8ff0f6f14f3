//! Kernel access: network namespaces, a synchronous netlink client (links, veths, bridges,
//! addresses, routes), sysctls. Behind small traits so plugin logic can be tested with a fake.
