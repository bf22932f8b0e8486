//! The methods a process knows by name, from its descriptor sets: the only
//! method names its metrics and spans may carry, so made-up paths sent by a
//! client cannot mint new names.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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

/// The names a method's metrics and spans carry. They live as long as the
/// process (see [`intern`]), so a call copies three references: no reference
/// count shared by every thread, no text formatted or copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodNames {
    pub service: &'static str,
    pub method: &'static str,
    /// `package.Service/Method`: the name of the method's RPC spans.
    pub span_name: &'static str,
}

impl MethodNames {
    pub fn new(service: &str, method: &str) -> Self {
        Self {
            service: intern(service),
            method: intern(method),
            span_name: intern(&format!("{service}/{method}")),
        }
    }

    /// The names of `/package.Service/Method`, remembered per path: for
    /// generated clients, which call only the methods of their own service.
    pub fn of_client_path(path: &str) -> Self {
        static BY_PATH: RwLock<BTreeMap<&'static str, MethodNames>> = RwLock::new(BTreeMap::new());
        if let Some(names) = BY_PATH.read().unwrap_or_else(PoisonError::into_inner).get(path) {
            return *names;
        }
        let (service, method) = split_method_path(path).unwrap_or((UNKNOWN, UNKNOWN));
        let names = Self::new(service, method);
        BY_PATH.write().unwrap_or_else(PoisonError::into_inner).insert(intern(path), names);
        names
    }
}

/// `package.Service` and `Method` of a `/package.Service/Method` path; `None` for any other shape.
pub fn split_method_path(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

/// `text` as a string that lives as long as the process, kept once however
/// often it is asked for. Only method and service names of the descriptor
/// sets a process serves or calls (and `unknown`) come here, so what is kept
/// is bounded by those sets, never by what clients send.
fn intern(text: &str) -> &'static str {
    static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kept) = interned.get(text) {
        return kept;
    }
    let kept: &'static str = Box::leak(text.into());
    interned.insert(kept);
    kept
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
                let (service, method) = split_method_path(&path)?;
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
            (names.service.to_owned(), names.method.to_owned(), names.span_name.to_owned())
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

    #[test]
    fn names_are_kept_once_whoever_asks() {
        let first = MethodNames::of_client_path("/suite.order.v1.OrderService/GetOrder");
        let again = MethodNames::of_client_path("/suite.order.v1.OrderService/GetOrder");
        let built = MethodNames::new("suite.order.v1.OrderService", "GetOrder");
        assert_eq!(first, built);
        assert!(std::ptr::eq(first.span_name, again.span_name) && std::ptr::eq(first.service, built.service));
        assert_eq!(first.span_name, "suite.order.v1.OrderService/GetOrder");
        let odd = MethodNames::of_client_path("no-slashes");
        assert_eq!((odd.service, odd.method), ("unknown", "unknown"));
    }
}
