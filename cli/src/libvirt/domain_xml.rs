//! What Ferry needs from a domain's XML: its disks, their images and their backing chains.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// One `<disk>` of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDef {
    /// Guest target (`vda`); the name of the disk in snapshots.
    pub target: String,
    /// `disk`, `cdrom`, `floppy`, `lun`.
    pub device: String,
    /// `file`, `block`, `network`, `volume`, ...
    pub source_type: String,
    /// The image of the active layer, for file and block disks.
    pub source: Option<PathBuf>,
    /// Image format from `<driver type=…>` (`raw`, `qcow2`).
    pub format: Option<String>,
    /// The active layer has a backing image (an overlay, or a qcow2 with a backing file).
    pub backing: Option<PathBuf>,
    pub readonly: bool,
    /// `<shareable/>`: other domains may have the image open for writing.
    pub shareable: bool,
    /// `<source><slices><slice type='storage' offset=… size=…/>`: the disk is that byte
    /// range of its image, as (offset, size).
    pub storage_slice: Option<(String, String)>,
}

/// Parses every `<devices><disk>` of a domain XML.
pub fn disks(xml: &str) -> Result<Vec<DiskDef>> {
    let doc = roxmltree::Document::parse(xml).context("domain XML does not parse")?;
    let devices = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("devices"));
    let Some(devices) = devices else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for disk in devices.children().filter(|n| n.has_tag_name("disk")) {
        let child = |name: &str| disk.children().find(|n| n.has_tag_name(name));
        let Some(target) = child("target").and_then(|t| t.attribute("dev")) else {
            continue;
        };
        let source = child("source").and_then(|s| s.attribute("file").or(s.attribute("dev")));
        let backing = child("backingStore")
            .and_then(|b| b.children().find(|n| n.has_tag_name("source")))
            .and_then(|s| s.attribute("file").or(s.attribute("dev")))
            .map(PathBuf::from);
        out.push(DiskDef {
            target: target.to_owned(),
            device: disk.attribute("device").unwrap_or("disk").to_owned(),
            source_type: disk.attribute("type").unwrap_or("file").to_owned(),
            source: source.map(PathBuf::from),
            format: child("driver")
                .and_then(|d| d.attribute("type"))
                .map(str::to_owned),
            backing,
            readonly: child("readonly").is_some(),
            shareable: child("shareable").is_some(),
            storage_slice: child("source")
                .into_iter()
                .flat_map(|s| s.descendants())
                .find(|n| n.has_tag_name("slice") && n.attribute("type") == Some("storage"))
                .map(|n| {
                    let attr = |name| n.attribute(name).unwrap_or("?").to_owned();
                    (attr("offset"), attr("size"))
                }),
        });
    }
    Ok(out)
}

/// Whether the domain XML has a QEMU guest agent channel.
pub fn has_agent_channel(xml: &str) -> bool {
    roxmltree::Document::parse(xml).is_ok_and(|doc| {
        doc.descendants().any(|n| {
            n.has_tag_name("target") && n.attribute("name") == Some("org.qemu.guest_agent.0")
        })
    })
}

/// `<{root}><disks>…</disks></{root}>` naming every `<disk>` of the domain, whatever its
/// device (disk, floppy, cdrom, lun): the element `chosen` returns for a selected disk,
/// `<disk name='T' {skip}/>` for all others, so libvirt never applies its default (for a
/// snapshot: an external overlay of every writable device) to one Ferry did not mean to touch.
pub fn per_disk_xml(
    root: &str,
    all_disks: &[DiskDef],
    skip: &str,
    chosen: impl Fn(&DiskDef) -> Option<String>,
) -> String {
    let mut xml = format!("<{root}><disks>");
    for disk in all_disks {
        match chosen(disk) {
            Some(element) => xml.push_str(&element),
            None => xml.push_str(&format!(
                "<disk name='{}' {skip}/>",
                escape_attr(&disk.target)
            )),
        }
    }
    let name = root.split_whitespace().next().unwrap_or(root);
    xml.push_str(&format!("</disks></{name}>"));
    xml
}

/// Escapes text for an XML attribute value.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<domain type='kvm'><name>vm</name><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/img/ovl.qcow2' index='2'/>
        <backingStore type='file' index='1'><format type='raw'/><source file='/img/base.raw'/><backingStore/></backingStore>
        <target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><driver name='qemu' type='raw'/>
        <source file='/img/b.raw'/><backingStore/><target dev='vdb' bus='virtio'/></disk>
      <disk type='network' device='disk'><source protocol='nbd' name='x'/><target dev='vdc'/></disk>
      <disk type='file' device='cdrom'><target dev='sda'/><readonly/></disk>
      <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    </devices></domain>"#;

    #[test]
    fn parses_disks_chains_and_kinds() {
        let d = disks(XML).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].target, "vda");
        assert_eq!(
            d[0].source.as_deref(),
            Some(std::path::Path::new("/img/ovl.qcow2"))
        );
        assert_eq!(
            d[0].backing.as_deref(),
            Some(std::path::Path::new("/img/base.raw"))
        );
        assert_eq!(d[0].format.as_deref(), Some("qcow2"));
        assert_eq!(d[1].backing, None);
        assert_eq!(d[2].source_type, "network");
        assert_eq!(d[2].source, None);
        assert!(d[3].readonly && d[3].device == "cdrom");
        assert!(has_agent_channel(XML));
        assert!(disks("<domain").is_err());
        assert_eq!(escape_attr("a'<&"), "a&apos;&lt;&amp;");
    }
}
