//! The data directory's protection: it holds the store (password hashes, token digests), the admin password
//! and `clouds.yaml`, so only its owner may enter it or read anything in it. The real drivers' files live
//! beside it, in `<data dir>.dataplane`: dnsmasq drops its root privileges and must still read its hosts files,
//! and nothing there is secret (addresses, MACs, host names, pid files, lease events).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Creates `dir` if needed and makes it and everything under it private: directories 0700, files without any
/// group or other bits (data 0600, scripts 0700). Runs at every start, so a cloud created by an older nimbus
/// (0755 and 0644) is closed too. Symbolic links are left alone, never followed.
pub fn make_private(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // The data directory itself may be a link (`--data-dir` on another disk): the directory it names is
    // closed; links inside it are not followed.
    restrict(&std::fs::canonicalize(dir)?)
}

/// Where the real drivers keep their files for the data directory `data_dir`: `<data dir>.dataplane`.
pub fn dataplane_dir(data_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let absolute: PathBuf = absolute.components().collect();
    match absolute.file_name() {
        Some(name) => absolute.with_file_name(format!("{}.dataplane", name.to_string_lossy())),
        None => absolute.join("dataplane"),
    }
}

/// Creates the dataplane directory (0755). A cloud of an older nimbus kept it inside the data directory, as
/// `dataplane`: it is moved out first, with the files that name the running dnsmasq processes, so they are
/// found and replaced rather than left serving.
pub fn prepare_dataplane_dir(data_dir: &Path) -> io::Result<PathBuf> {
    let dir = dataplane_dir(data_dir);
    let legacy = data_dir.join("dataplane");
    if legacy.is_dir() && !dir.exists() {
        std::fs::rename(&legacy, &dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn restrict(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    let private = if meta.is_dir() { 0o700 } else { mode & 0o700 };
    if mode != private {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            restrict(&entry?.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_open_data_directory_is_closed_to_everyone_but_its_owner() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("dataplane/dhcp")).unwrap();
        for (path, mode) in [("nimbus.redb", 0o644), ("dataplane/dhcp/hosts", 0o666), ("dataplane/script", 0o755)] {
            std::fs::write(data.join(path), "x").unwrap();
            std::fs::set_permissions(data.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        for dir in ["", "dataplane", "dataplane/dhcp"] {
            std::fs::set_permissions(data.join(dir), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let outside = root.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();

        make_private(&data).unwrap();

        for (path, want) in [
            ("", 0o700),
            ("dataplane", 0o700),
            ("dataplane/dhcp", 0o700),
            ("nimbus.redb", 0o600),
            ("dataplane/dhcp/hosts", 0o600),
            ("dataplane/script", 0o700),
        ] {
            assert_eq!(mode(&data.join(path)), want, "{path}");
        }
        assert_eq!(mode(&outside), 0o644, "a link's target outside is not touched");
    }

    #[test]
    fn the_dataplane_lives_beside_the_data_directory_and_an_old_one_inside_is_moved_out() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("dataplane/dhcp/net")).unwrap();
        std::fs::write(data.join("dataplane/dhcp/net/dnsmasq.pid"), "42").unwrap();
        let moved = prepare_dataplane_dir(&data).unwrap();
        assert_eq!(moved, root.path().join("data.dataplane"));
        assert_eq!(std::fs::read_to_string(moved.join("dhcp/net/dnsmasq.pid")).unwrap(), "42");
        assert!(!data.join("dataplane").exists());
        assert_eq!(mode(&moved), 0o755);
        assert_eq!(dataplane_dir(&root.path().join("data/.")), moved, "the same directory however it is written");
    }

    #[test]
    fn a_data_directory_given_as_a_link_is_closed_where_it_is() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("disk/data");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(real.join("nimbus.redb"), "x").unwrap();
        std::fs::set_permissions(real.join("nimbus.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = root.path().join("data");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        make_private(&link).unwrap();
        assert_eq!((mode(&real), mode(&real.join("nimbus.redb"))), (0o700, 0o600));
    }

    #[test]
    fn a_missing_data_directory_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a/b");
        make_private(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
    }
}
