//! Which format the host's libsasl2 reads, so that a new sasldb2 is one it can read.
//!
//! libsasl2 reads sasldb2 through its `sasldb` auxprop plugin (`libsasldb.so`), which is
//! linked against the database library the distribution built it with: `libdb-5.3.so`
//! (Debian, Ubuntu), `libgdbm.so.6` (Fedora, RHEL, Alpine, Arch) or `liblmdb.so.0`. The
//! plugin is looked for where libsasl2 looks (`SASL_PATH`, then the usual plugin directories),
//! and the libraries it needs are read from its ELF dynamic section. Without a plugin nothing
//! but saslauthd-rs reads the file, and new files are LMDB (what upstream's master branch
//! prefers, having dropped Berkeley DB).

use std::path::{Path, PathBuf};

use super::Kind;

/// The format new files get when the host has no libsasl2 sasldb plugin.
pub const FALLBACK: Kind = Kind::Lmdb;

/// Where libsasl2 looks for plugins, after `SASL_PATH`: Debian's multiarch directories,
/// Fedora's lib64, then the upstream default.
const PLUGIN_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu/sasl2",
    "/usr/lib/aarch64-linux-gnu/sasl2",
    "/usr/lib64/sasl2",
    "/usr/lib/sasl2",
    "/usr/local/lib/sasl2",
    "/usr/local/lib64/sasl2",
];

/// The format for new files, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFormat {
    /// The format.
    pub kind: Kind,
    /// How it was decided, for `-v` outputs and messages.
    pub why: String,
}

/// The format of the host's libsasl2 sasldb plugin, or [`FALLBACK`].
pub fn new_file_kind() -> HostFormat {
    let mut dirs: Vec<PathBuf> = std::env::var_os("SASL_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(PLUGIN_DIRS.iter().map(PathBuf::from));
    for dir in &dirs {
        let Some(plugin) = find_plugin(dir) else {
            continue;
        };
        let needed = match std::fs::read(&plugin) {
            Ok(bytes) => needed_libraries(&bytes).unwrap_or_default(),
            Err(_) => continue,
        };
        for lib in &needed {
            if let Some(kind) = library_kind(lib) {
                return HostFormat {
                    kind,
                    why: format!("libsasl2's sasldb plugin {} links {lib}", plugin.display()),
                };
            }
        }
    }
    HostFormat {
        kind: FALLBACK,
        why: "no libsasl2 sasldb plugin found; the default for new files".into(),
    }
}

fn find_plugin(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("libsasldb.so"))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The database library a needed library name stands for.
fn library_kind(lib: &str) -> Option<Kind> {
    if lib.starts_with("libdb-") || lib.starts_with("libdb.so") {
        Some(Kind::BerkeleyDb)
    } else if lib.starts_with("libgdbm") {
        Some(Kind::Gdbm)
    } else if lib.starts_with("liblmdb") {
        Some(Kind::Lmdb)
    } else {
        None
    }
}

/// The `DT_NEEDED` names of an ELF shared object (32 or 64 bit, either byte order); `None`
/// if it is not one or is malformed.
fn needed_libraries(elf: &[u8]) -> Option<Vec<String>> {
    if elf.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = match elf.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match elf.get(5)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let read = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at.checked_add(len)?)?;
        let mut v = 0u64;
        for i in 0..len {
            let b = if big { bytes[i] } else { bytes[len - 1 - i] };
            v = (v << 8) | u64::from(b);
        }
        Some(v)
    };
    let word = if wide { 8 } else { 4 };
    let (phoff, phentsize, phnum) = if wide {
        (read(32, 8)?, read(54, 2)?, read(56, 2)?)
    } else {
        (read(28, 4)?, read(42, 2)?, read(44, 2)?)
    };
    // Program headers: the loadable segments (to turn addresses into offsets) and the
    // dynamic segment.
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let at = usize::try_from(phoff.checked_add(i.checked_mul(phentsize)?)?).ok()?;
        let kind = read(at, 4)?;
        let (offset, vaddr, filesz) = if wide {
            (read(at + 8, 8)?, read(at + 16, 8)?, read(at + 32, 8)?)
        } else {
            (read(at + 4, 4)?, read(at + 8, 4)?, read(at + 16, 4)?)
        };
        match kind {
            1 => loads.push((vaddr, offset, filesz)),
            2 => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let (dyn_off, dyn_size) = dynamic?;
    let mut needed = Vec::new();
    let mut strtab = None;
    let entry = 2 * word;
    for i in 0..dyn_size / entry as u64 {
        let at = usize::try_from(dyn_off.checked_add(i * entry as u64)?).ok()?;
        let (tag, value) = (read(at, word)?, read(at + word, word)?);
        match tag {
            0 => break,
            1 => needed.push(value),
            5 => strtab = Some(value),
            _ => {}
        }
    }
    let strtab = strtab?;
    let strtab_off = loads
        .iter()
        .find(|(vaddr, _, size)| strtab >= *vaddr && strtab < vaddr.saturating_add(*size))
        .map(|(vaddr, offset, _)| strtab - vaddr + offset)?;
    let names = needed
        .into_iter()
        .filter_map(|name| {
            let start = usize::try_from(strtab_off.checked_add(name)?).ok()?;
            let rest = elf.get(start..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .collect();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_name_formats() {
        assert_eq!(library_kind("libdb-5.3.so"), Some(Kind::BerkeleyDb));
        assert_eq!(library_kind("libgdbm.so.6"), Some(Kind::Gdbm));
        assert_eq!(library_kind("liblmdb.so.0"), Some(Kind::Lmdb));
        assert_eq!(library_kind("libc.so.6"), None);
    }

    #[test]
    fn reads_the_needed_libraries_of_a_real_object() {
        // Any shared object on the build machine will do; its C library is always needed.
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let needed = needed_libraries(&exe).unwrap();
        assert!(
            needed.iter().any(|n| n.starts_with("libc.so")),
            "{needed:?}"
        );
        assert_eq!(needed_libraries(b"not an ELF file"), None);
        assert_eq!(needed_libraries(&exe[..64]), None);
    }
}
