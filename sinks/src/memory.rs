//! [`MemorySink`]: a process-local map, for unit tests and benchmarks of the layers above.
//!
//! Every operation takes one lock for one map operation, so puts are trivially atomic and
//! put-if-absent is exact. "Durable" means "until the sink is dropped". Objects are stored as
//! `Arc<[u8]>` so a read holds the lock only long enough to clone a pointer, never to copy data.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::leftover::{self, Leftover};
use crate::{ObjectKey, ObjectMeta, PutMode, PutOutcome, Sink, SinkError};

#[derive(Debug, Clone)]
struct Stored {
    data: Arc<[u8]>,
    modified: SystemTime,
}

/// An in-memory sink. Cheap to create; `location()` is `"memory"`.
#[derive(Debug, Default)]
pub struct MemorySink {
    objects: Mutex<BTreeMap<ObjectKey, Stored>>,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map. A panic while the lock was held cannot have left it half-updated (each
    /// operation is a single map call), so a poisoned lock is still safe to use.
    fn objects(&self) -> MutexGuard<'_, BTreeMap<ObjectKey, Stored>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stored(&self, key: &ObjectKey) -> Result<Stored, SinkError> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| SinkError::NotFound {
                key: key.to_string(),
            })
    }
}

impl Sink for MemorySink {
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome, SinkError> {
        // Copy outside the lock.
        let stored = Stored {
            data: Arc::from(data),
            modified: SystemTime::now(),
        };
        let mut objects = self.objects();
        match (objects.entry(key.clone()), mode) {
            (Entry::Occupied(_), PutMode::Create) => Ok(PutOutcome::AlreadyExists),
            (Entry::Occupied(mut entry), PutMode::Overwrite) => {
                entry.insert(stored);
                Ok(PutOutcome::Written)
            }
            (Entry::Vacant(entry), _) => {
                entry.insert(stored);
                Ok(PutOutcome::Written)
            }
        }
    }

    fn get(&self, key: &ObjectKey) -> Result<Vec<u8>, SinkError> {
        Ok(self.stored(key)?.data.to_vec())
    }

    fn get_range(&self, key: &ObjectKey, start: u64, end: u64) -> Result<Vec<u8>, SinkError> {
        let data = self.stored(key)?.data;
        SinkError::check_range(key, start, end, data.len() as u64)?;
        // Both bounds are at most `data.len()`, so they fit in usize.
        Ok(data[start as usize..end as usize].to_vec())
    }

    fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, SinkError> {
        let stored = self.stored(key)?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: stored.data.len() as u64,
            modified: stored.modified,
        })
    }

    /// Snapshots the matching entries' metadata (not their data) under the lock.
    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Result<Box<dyn Iterator<Item = Result<ObjectMeta, SinkError>> + Send + 'a>, SinkError>
    {
        let matching: Vec<ObjectMeta> = self
            .objects()
            .iter()
            .filter(|(key, _)| key.as_str().starts_with(prefix))
            .map(|(key, stored)| ObjectMeta {
                key: key.clone(),
                size: stored.data.len() as u64,
                modified: stored.modified,
            })
            .collect();
        Ok(Box::new(matching.into_iter().map(Ok)))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), SinkError> {
        self.objects().remove(key);
        Ok(())
    }

    /// A put stores under the map's lock in one step: there are never leftovers.
    fn leftovers(&self, dir: &str) -> Result<Vec<Leftover>, SinkError> {
        leftover::parse_dir(dir)?;
        Ok(Vec::new())
    }

    fn remove_leftover(&self, _leftover: &Leftover) -> Result<(), SinkError> {
        Ok(())
    }

    fn location(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[test]
    fn conformance() {
        conformance::run_all(&MemorySink::new());
    }
}
