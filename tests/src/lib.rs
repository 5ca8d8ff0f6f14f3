//! Integration-test harness: private namespaces, plugin execution, kernel inspection.
