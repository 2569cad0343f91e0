//! Loading policies: the shipped ones compiled into the binary, then a directory's files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::Policy;

/// The policies shipped in `policies/`, compiled in so a bare binary works.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "gengo-15m-12h.toml",
        include_str!("../../policies/gengo-15m-12h.toml"),
    ),
    (
        "gengo-3x-hourly.toml",
        include_str!("../../policies/gengo-3x-hourly.toml"),
    ),
    ("tolq.toml", include_str!("../../policies/tolq.toml")),
    ("ovesio.toml", include_str!("../../policies/ovesio.toml")),
    ("phrase.toml", include_str!("../../policies/phrase.toml")),
    (
        "standard-webhooks.toml",
        include_str!("../../policies/standard-webhooks.toml"),
    ),
    (
        "herald-notify.toml",
        include_str!("../../policies/herald-notify.toml"),
    ),
];

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file is not a valid policy; `reason` carries toml's line and column.
    #[error("{file}: {reason}")]
    Parse {
        /// The file (or built-in name) the policy came from.
        file: String,
        /// What is wrong, with the line where the parser knows it.
        reason: String,
    },
    /// Two files in one directory define the same name.
    #[error("{file}: policy name {name:?} is already defined by {other}")]
    Duplicate {
        /// The second file.
        file: String,
        /// The name both use.
        name: String,
        /// The first file.
        other: String,
    },
    /// The directory or a file in it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What was being read.
        path: String,
        /// The operating system's answer.
        source: std::io::Error,
    },
}

/// The policies known to a herald instance, by name.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    by_name: BTreeMap<String, Arc<Policy>>,
}

impl PolicySet {
    /// The shipped policies only.
    pub fn built_in() -> PolicySet {
        let mut set = PolicySet::default();
        for (file, text) in BUILT_IN {
            // A shipped policy that does not parse is a build defect caught by the tests below.
            if let Ok(policy) = Policy::from_toml(file, text) {
                set.insert(policy);
            }
        }
        set
    }

    /// The shipped policies, then every `*.toml` in `dir` (a file may replace a shipped policy
    /// by using its name). Any file that does not parse fails the whole load.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        let mut set = PolicySet::built_in();
        for policy in Self::read_dir(dir)? {
            set.insert(policy);
        }
        Ok(set)
    }

    /// Parses every `*.toml` in `dir`, reporting the first bad file (`herald policies check`).
    pub fn read_dir(dir: &Path) -> Result<Vec<Policy>, PolicyError> {
        let io = |source| PolicyError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?
            .into_iter()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut policies = Vec::new();
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
                path: file.clone(),
                source,
            })?;
            let policy = Policy::from_toml(&file, &text)?;
            if let Some(other) = seen.insert(policy.name.clone(), file.clone()) {
                return Err(PolicyError::Duplicate {
                    file,
                    name: policy.name,
                    other,
                });
            }
            policies.push(policy);
        }
        Ok(policies)
    }

    /// Adds or replaces a policy.
    pub fn insert(&mut self, policy: Policy) {
        self.by_name.insert(policy.name.clone(), Arc::new(policy));
    }

    /// The policy with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Policy>> {
        self.by_name.get(name)
    }

    /// All policies, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_policy_parses() {
        for (file, text) in BUILT_IN {
            Policy::from_toml(file, text).unwrap();
        }
        assert_eq!(PolicySet::built_in().iter().count(), BUILT_IN.len());
    }

    #[test]
    fn a_directory_overrides_by_name_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let quick = "name = \"phrase\"\n[schedule]\nkind = \"fixed\"\ninterval = \"1s\"\nmax_attempts = 2\n";
        std::fs::write(dir.path().join("a.toml"), quick).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let set = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!(set.get("phrase").unwrap().schedule.attempts(), 2);
        assert!(set.get("tolq").is_some());

        std::fs::write(dir.path().join("b.toml"), quick).unwrap();
        let err = PolicySet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already defined"), "{err}");

        std::fs::write(dir.path().join("b.toml"), "name = 3").unwrap();
        let err = PolicySet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("b.toml") && err.contains("line 1"), "{err}");
    }
}
