//! Settings read from files: `CALSYNC_SECRETS_DIR` names a directory (on Kubernetes, a mounted
//! Secret) whose files, each named like an environment variable (`ENCRYPTION_KEY`,
//! `CALSYNC_API_KEYS`, ...), give those variables' values. Keys then never sit in the process
//! environment, where `/proc/<pid>/environ`, crash reports and `kubectl describe` show them.
//!
//! `main` loads it for `calsync controller` and `calsync api` only (other commands refuse it, so a
//! key given in a file is never silently ignored by code that reads the environment directly).
//!
//! Owns: reading the directory once at start-up and the [`var`] lookup (environment first, then
//! the files). Must not touch: what any variable means (each config module parses its own).
//! Never formats a value: errors name the variable and the path only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The variable naming the directory.
pub const DIR_VARIABLE: &str = "CALSYNC_SECRETS_DIR";

/// Why the settings files could not be read. Never carries a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretFilesError {
    #[error("{DIR_VARIABLE}={dir}: cannot list the directory ({reason})")]
    Dir { dir: PathBuf, reason: String },
    #[error("{DIR_VARIABLE}={dir}: cannot read {name} ({reason})")]
    File { dir: PathBuf, name: String, reason: String },
    #[error("{name} is set in the environment and as a file in {DIR_VARIABLE}={dir}; set it in one place only")]
    Twice { dir: PathBuf, name: String },
}

static FILES: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// Whether `name` can be an environment variable's name as calsync spells them (upper case,
/// digits, `_`). Skips the `..data` links and dot files of a mounted Secret.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The settings in `dir`: one per file named like a variable, its content without the trailing
/// newline. Files of a mounted Secret are symlinks; they are followed.
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, String>, SecretFilesError> {
    let dir_err = |e: std::io::Error| SecretFilesError::Dir { dir: dir.to_path_buf(), reason: e.to_string() };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let path = entry.path();
        if !is_variable_name(&name) || !path.is_file() {
            continue;
        }
        let file_err = |reason: String| SecretFilesError::File { dir: dir.to_path_buf(), name: name.clone(), reason };
        let bytes = std::fs::read(&path).map_err(|e| file_err(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| file_err("not UTF-8 text".into()))?;
        out.insert(name.clone(), text.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(out)
}

/// Read the directory `lookup(CALSYNC_SECRETS_DIR)` names, if any, refusing a variable set both
/// ways (in the environment and as a file).
pub fn read_from(lookup: &dyn Fn(&str) -> Option<String>) -> Result<BTreeMap<String, String>, SecretFilesError> {
    let Some(dir) = lookup(DIR_VARIABLE).filter(|d| !d.trim().is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let dir = PathBuf::from(dir);
    let files = read_dir(&dir)?;
    if let Some(name) = files.keys().find(|name| lookup(name).is_some()) {
        return Err(SecretFilesError::Twice { dir, name: name.clone() });
    }
    Ok(files)
}

/// Load the process's settings files once, at start-up (later calls keep the first result).
/// Returns the names of the variables the files set.
pub fn load() -> Result<Vec<String>, SecretFilesError> {
    let files = read_from(&|name| std::env::var(name).ok())?;
    let names = files.keys().cloned().collect();
    let _ = FILES.set(files);
    Ok(names)
}

/// A variable's value: the environment's, else the settings file's (after [`load`]).
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| FILES.get().and_then(|f| f.get(name).cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    #[test]
    fn files_named_like_variables_become_settings_without_the_trailing_newline() {
        let dir = dir_with(&[("ENCRYPTION_KEY", "a2V5\n"), ("CALSYNC_API_KEYS", "k1,k2\r\n"), ("..data", "x")]);
        std::os::unix::fs::symlink(dir.path().join("ENCRYPTION_KEY"), dir.path().join("SECRET_KEY")).unwrap();
        std::fs::create_dir(dir.path().join("NESTED")).unwrap();
        let got = read_dir(dir.path()).unwrap();
        let want: BTreeMap<String, String> =
            [("CALSYNC_API_KEYS", "k1,k2"), ("ENCRYPTION_KEY", "a2V5"), ("SECRET_KEY", "a2V5")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn no_directory_variable_means_no_settings() {
        assert!(read_from(&|_| None).unwrap().is_empty());
    }

    #[test]
    fn a_variable_set_twice_is_refused_without_showing_a_value() {
        let dir = dir_with(&[("ENCRYPTION_KEY", "from-file")]);
        let path = dir.path().to_str().unwrap().to_string();
        let lookup = move |name: &str| match name {
            DIR_VARIABLE => Some(path.clone()),
            "ENCRYPTION_KEY" => Some("from-env".to_string()),
            _ => None,
        };
        let err = read_from(&lookup).unwrap_err();
        assert!(matches!(err, SecretFilesError::Twice { ref name, .. } if name == "ENCRYPTION_KEY"), "{err}");
        let text = err.to_string();
        assert!(!text.contains("from-file") && !text.contains("from-env"), "{text}");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err =
            read_from(&|name| (name == DIR_VARIABLE).then(|| "/nonexistent/calsync-keys".to_string())).unwrap_err();
        assert!(err.to_string().contains("CALSYNC_SECRETS_DIR=/nonexistent/calsync-keys"), "{err}");
    }

    #[test]
    fn unreadable_content_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("SECRET_KEY"), [0xff, 0xfe]).unwrap();
        let err = read_dir(dir.path()).unwrap_err();
        assert!(matches!(err, SecretFilesError::File { ref name, .. } if name == "SECRET_KEY"), "{err}");
    }
}
