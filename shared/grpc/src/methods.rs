//! The methods a process knows by name, from its descriptor sets: the only
//! method names its metrics and spans may carry, so made-up paths sent by a
//! client cannot mint new names.

use std::collections::HashMap;
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

/// The names a method's metrics and spans carry. Made once per known method,
/// so a call clones three reference counts instead of formatting and copying text.
#[derive(Debug, Clone)]
pub struct MethodNames {
    pub service: Arc<str>,
    pub method: Arc<str>,
    /// `package.Service/Method`: the name of the method's RPC spans.
    pub span_name: Arc<str>,
}

impl MethodNames {
    pub fn new(service: &str, method: &str) -> Self {
        Self {
            service: service.into(),
            method: method.into(),
            span_name: format!("{service}/{method}").into(),
        }
    }
}

/// A set of `/package.Service/Method` paths. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct KnownMethods(Arc<Known>);

#[derive(Debug)]
struct Known {
    by_path: HashMap<String, MethodNames>,
    unknown: MethodNames,
}

impl Default for KnownMethods {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl KnownMethods {
    pub fn new(paths: impl IntoIterator<Item = String>) -> Self {
        let by_path = paths
            .into_iter()
            .filter_map(|path| {
                let (service, method) = path.strip_prefix('/')?.split_once('/')?;
                let names = MethodNames::new(service, method);
                Some((path, names))
            })
            .collect();
        Self(Arc::new(Known {
            by_path,
            unknown: MethodNames::new(UNKNOWN, UNKNOWN),
        }))
    }

    /// The names of `path` when it is known, else `unknown` for service and method.
    pub fn names(&self, path: &str) -> &MethodNames {
        self.0.by_path.get(path).unwrap_or(&self.0.unknown)
    }
}

const UNKNOWN: &str = "unknown";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_keep_their_names_and_others_are_unknown() {
        let known = KnownMethods::new(method_paths(suite_proto::FILE_DESCRIPTOR_SET));
        let names = |path: &str| {
            let names = known.names(path);
            (names.service.to_string(), names.method.to_string(), names.span_name.to_string())
        };
        assert_eq!(
            names("/suite.user.v1.UserService/GetUser"),
            (
                "suite.user.v1.UserService".to_owned(),
                "GetUser".to_owned(),
                "suite.user.v1.UserService/GetUser".to_owned()
            )
        );
        let unknown = ("unknown".to_owned(), "unknown".to_owned(), "unknown/unknown".to_owned());
        assert_eq!(names("/suite.user.v1.UserService/MadeUp"), unknown);
        assert_eq!(names("nonsense"), unknown);
    }
}
