//! The methods a process knows by name, from its descriptor sets: the only
//! method names its metrics and spans may carry, so made-up paths sent by a
//! client cannot mint new names.

use std::collections::HashSet;
use std::sync::Arc;

use prost::Message as _;

/// `/package.Service/Method` of every method an encoded descriptor set
/// describes (none if it does not decode): the names metrics and spans may carry.
pub fn method_paths(descriptor_set: &[u8]) -> Vec<String> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(descriptor_set) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for file in set.file {
        let package = file.package();
        for service in &file.service {
            let qualified = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            for method in &service.method {
                paths.push(format!("/{qualified}/{}", method.name()));
            }
        }
    }
    paths
}

/// A set of `/package.Service/Method` paths. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods(Arc<HashSet<String>>);

impl KnownMethods {
    pub fn new(paths: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(paths.into_iter().collect()))
    }

    /// The service and method of `path` when it is known, else `unknown` for both.
    pub fn names<'a>(&self, path: &'a str) -> (&'a str, &'a str) {
        match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
            Some(names) if self.0.contains(path) => names,
            _ => ("unknown", "unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_keep_their_names_and_others_are_unknown() {
        let known = KnownMethods::new(method_paths(suite_proto::FILE_DESCRIPTOR_SET));
        assert_eq!(
            known.names("/suite.user.v1.UserService/GetUser"),
            ("suite.user.v1.UserService", "GetUser")
        );
        assert_eq!(known.names("/suite.user.v1.UserService/MadeUp"), ("unknown", "unknown"));
        assert_eq!(known.names("nonsense"), ("unknown", "unknown"));
    }
}
