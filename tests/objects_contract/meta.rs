//! The `set_labels_and_finalizer` contract: a new TaskSync's labels and finalizer as one
//! metadata change, run on every store by the parent's `contract!` (the memory store runs the
//! trait's default, two calls).
//!
//! Owns: that test. Helpers (`task`, `Harness`) are the parent's.

use super::*;

/// Labels merge, the finalizer is added once, a repeat changes nothing, an object being deleted
/// gets no new finalizer (its labels still merge), and a missing object is `NotFound`.
pub(super) async fn labels_and_finalizer_in_one_write(h: &dyn Harness) {
    let o = h.objects();
    let sel = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>();
    o.apply_task_sync(&task("default", "t", &[("a", "1")])).await.unwrap();
    let key = ObjectKey::task_sync("default", "t");
    o.set_labels_and_finalizer(&key, &sel(&[("b", "2")]), "f").await.unwrap();
    let t = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(t.labels(), &sel(&[("a", "1"), ("b", "2")]).into_iter().collect());
    assert_eq!(t.finalizers(), ["f"]);
    let names = |v: Vec<TaskSync>| v.into_iter().map(|t| t.name_any()).collect::<Vec<_>>();
    assert_eq!(names(o.list_task_syncs(None, &sel(&[("b", "2")])).await.unwrap()), ["t"]);

    o.set_labels_and_finalizer(&key, &sel(&[("b", "2")]), "f").await.unwrap();
    let again = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(again.resource_version(), t.resource_version(), "nothing changed, nothing written");

    assert_eq!(o.delete(&key).await.unwrap(), Deletion::Marked);
    o.set_labels_and_finalizer(&key, &sel(&[("c", "3")]), "g").await.unwrap();
    let marked = o.get_task_sync("default", "t").await.unwrap().unwrap();
    assert_eq!(marked.finalizers(), ["f"], "no new finalizer on an object being deleted");
    assert_eq!(marked.labels().get("c").map(String::as_str), Some("3"));

    let missing = ObjectKey::task_sync("default", "missing");
    assert!(matches!(
        o.set_labels_and_finalizer(&missing, &sel(&[("a", "1")]), "f").await,
        Err(StoreError::NotFound(_))
    ));
}
