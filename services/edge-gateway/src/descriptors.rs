//! Reflection at the gateway describes exactly the services it routes: the
//! suite's descriptor set, with every service the routes do not name removed.

use std::collections::HashSet;

use prost::Message as _;
use prost_types::FileDescriptorSet;

/// The routed services' descriptors (with every file they depend on), encoded,
/// and the routed services no descriptor describes.
pub fn routed(all: &[u8], routed: &HashSet<&str>) -> Result<(Vec<u8>, Vec<String>), prost::DecodeError> {
    let mut set = FileDescriptorSet::decode(all)?;
    let mut described = HashSet::new();
    for file in &mut set.file {
        let package = file.package().to_owned();
        file.service.retain(|service| {
            let name = if package.is_empty() {
                service.name().to_owned()
            } else {
                format!("{package}.{}", service.name())
            };
            let keep = routed.contains(name.as_str());
            if keep {
                described.insert(name);
            }
            keep
        });
    }
    let mut missing: Vec<String> = routed
        .iter()
        .filter(|service| !described.contains(**service))
        .map(|service| (*service).to_owned())
        .collect();
    missing.sort();
    Ok((set.encode_to_vec(), missing))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keeps_only_routed_services() {
        let routed_services = HashSet::from(["suite.user.v1.UserService", "acme.v1.Unknown"]);
        let (encoded, missing) = routed(suite_proto::FILE_DESCRIPTOR_SET, &routed_services).unwrap();
        let set = FileDescriptorSet::decode(encoded.as_slice()).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| format!("{}.{}", file.package(), service.name()))
            })
            .collect();
        assert_eq!(services, ["suite.user.v1.UserService"]);
        assert_eq!(missing, ["acme.v1.Unknown"]);
    }
}
