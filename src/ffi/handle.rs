//! Validated handles.
//!
//! A handle given to C is not an address: it encodes a type tag, a slot index in that
//! type's registry, and the slot's generation (salted so that ordinary pointers almost never
//! decode into a live handle):
//!
//! ```text
//! bits 63..32  generation ^ SALT     bits 31..8  slot index     bits 7..0  type tag
//! ```
//!
//! Looking a handle up checks the tag (wrong type), the index (garbage), and the generation
//! (stale: the slot was freed, and maybe reused). Every lookup clones the object's `Arc`, so
//! an object freed by another thread during a call stays alive until the call returns.
//! Nothing is ever dereferenced from the handle value itself.

use std::sync::Arc;

use parking_lot::RwLock;

use super::FfiError;
use super::status::dsrs_status::*;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("deepspeed_rs's C ABI handle encoding needs 64-bit pointers");

const SALT: u32 = 0x5EED_D5A1;
const MAX_SLOTS: usize = 1 << 24;

struct Slot<T: ?Sized> {
    generation: u32,
    value: Option<Arc<T>>,
}

struct Slots<T: ?Sized> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

/// The live objects of one handle type.
pub(crate) struct Registry<T: ?Sized> {
    inner: RwLock<Slots<T>>,
}

impl<T: ?Sized> Registry<T> {
    pub(crate) const fn new() -> Registry<T> {
        Registry {
            inner: RwLock::new(Slots {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }
}

/// An opaque C type whose pointers are handles into a [`Registry`].
pub(crate) trait Handle: Sized + 'static {
    /// The Rust object behind the handle.
    type Target: ?Sized + Send + Sync + 'static;
    /// The tag in the handle's low byte.
    const TAG: u8;
    /// The C type name, for messages.
    const NAME: &'static str;
    /// The registry of live objects.
    fn registry() -> &'static Registry<Self::Target>;
}

/// Tags of every handle type, for naming the type of a wrongly passed handle.
const TAG_NAMES: &[(u8, &str)] = &[
    (0xA1, "dsrs_accelerator"),
    (0xA2, "dsrs_buffer"),
    (0xA3, "dsrs_stream"),
    (0xA4, "dsrs_event"),
    (0xA5, "dsrs_op"),
    (0xA6, "dsrs_graph"),
    (0xA7, "dsrs_engine"),
];

fn encode(tag: u8, index: u32, generation: u32) -> usize {
    ((u64::from(generation ^ SALT) << 32) | (u64::from(index) << 8) | u64::from(tag)) as usize
}

fn decode(v: usize) -> (u8, u32, u32) {
    let v = v as u64;
    (
        v as u8,
        ((v >> 8) & 0xFF_FFFF) as u32,
        ((v >> 32) as u32) ^ SALT,
    )
}

/// Registers `value` and returns its new handle.
pub(crate) fn insert<H: Handle>(value: Arc<H::Target>) -> Result<*mut H, FfiError> {
    let mut r = H::registry().inner.write();
    let index = match r.free.pop() {
        Some(i) => i as usize,
        None => {
            if r.slots.len() >= MAX_SLOTS {
                return Err(FfiError::new(
                    DSRS_STATUS_OUT_OF_MEMORY,
                    format!(
                        "too many live {} handles ({MAX_SLOTS}); free some first",
                        H::NAME
                    ),
                ));
            }
            r.slots.push(Slot {
                generation: 1,
                value: None,
            });
            r.slots.len() - 1
        }
    };
    let slot = &mut r.slots[index];
    slot.value = Some(value);
    let h = encode(H::TAG, index as u32, slot.generation);
    Ok(std::ptr::without_provenance_mut(h))
}

fn wrong_or_invalid<H: Handle>(raw: usize, tag: u8, arg: &str) -> FfiError {
    match TAG_NAMES.iter().find(|(t, _)| *t == tag) {
        Some((_, other)) => FfiError::new(
            DSRS_STATUS_WRONG_HANDLE_TYPE,
            format!(
                "argument '{arg}' is a {other} handle, but a {} is expected",
                H::NAME
            ),
        ),
        None => FfiError::new(
            DSRS_STATUS_INVALID_HANDLE,
            format!(
                "argument '{arg}' ({raw:#x}) is not a {} handle issued by this library",
                H::NAME
            ),
        ),
    }
}

/// Looks up a handle; errors name the argument and say what is wrong with it.
pub(crate) fn get<H: Handle>(p: *const H, arg: &str) -> Result<Arc<H::Target>, FfiError> {
    let raw = p.addr();
    if raw == 0 {
        return Err(FfiError::null(arg));
    }
    let (tag, index, generation) = decode(raw);
    if tag != H::TAG {
        return Err(wrong_or_invalid::<H>(raw, tag, arg));
    }
    let r = H::registry().inner.read();
    match r.slots.get(index as usize) {
        Some(slot) if slot.generation == generation => match &slot.value {
            Some(v) => Ok(Arc::clone(v)),
            None => Err(stale::<H>(arg)),
        },
        Some(slot) if generation < slot.generation && generation != 0 => Err(stale::<H>(arg)),
        _ => Err(FfiError::new(
            DSRS_STATUS_INVALID_HANDLE,
            format!(
                "argument '{arg}' ({raw:#x}) is not a {} handle issued by this library",
                H::NAME
            ),
        )),
    }
}

fn stale<H: Handle>(arg: &str) -> FfiError {
    FfiError::new(
        DSRS_STATUS_STALE_HANDLE,
        format!(
            "argument '{arg}' is a stale {} handle (it was already freed)",
            H::NAME
        ),
    )
}

/// Frees a handle (NULL is a no-op). The object is dropped outside the registry lock, so
/// its destructor may use the library.
pub(crate) fn remove<H: Handle>(p: *mut H, arg: &str) -> Result<(), FfiError> {
    let raw = p.addr();
    if raw == 0 {
        return Ok(());
    }
    let (tag, index, generation) = decode(raw);
    if tag != H::TAG {
        return Err(wrong_or_invalid::<H>(raw, tag, arg));
    }
    let value = {
        let mut r = H::registry().inner.write();
        let Some(slot) = r.slots.get_mut(index as usize) else {
            return Err(FfiError::new(
                DSRS_STATUS_INVALID_HANDLE,
                format!(
                    "argument '{arg}' ({raw:#x}) is not a {} handle issued by this library",
                    H::NAME
                ),
            ));
        };
        if slot.generation != generation || slot.value.is_none() {
            return Err(if generation != 0 && generation <= slot.generation {
                stale::<H>(arg)
            } else {
                FfiError::new(
                    DSRS_STATUS_INVALID_HANDLE,
                    format!(
                        "argument '{arg}' ({raw:#x}) is not a {} handle issued by this library",
                        H::NAME
                    ),
                )
            });
        }
        let value = slot.value.take();
        slot.generation = match slot.generation.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        r.free.push(index);
        value
    };
    drop(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Thing {
        _private: [u8; 0],
    }
    static THINGS: Registry<String> = Registry::new();
    impl Handle for Thing {
        type Target = String;
        const TAG: u8 = 0xA1; // pretends to be an accelerator for the test
        const NAME: &'static str = "test_thing";
        fn registry() -> &'static Registry<String> {
            &THINGS
        }
    }

    struct Other {
        _private: [u8; 0],
    }
    static OTHERS: Registry<u32> = Registry::new();
    impl Handle for Other {
        type Target = u32;
        const TAG: u8 = 0xA2;
        const NAME: &'static str = "dsrs_buffer";
        fn registry() -> &'static Registry<u32> {
            &OTHERS
        }
    }

    #[test]
    fn lookups_distinguish_live_stale_wrong_and_garbage() {
        let h = insert::<Thing>(Arc::new("a".into())).unwrap();
        assert_eq!(*get(h, "x").unwrap(), "a");
        remove(h, "x").unwrap();
        let e = get(h, "x").unwrap_err();
        assert_eq!(e.status, DSRS_STATUS_STALE_HANDLE);
        assert_eq!(
            remove(h, "x").unwrap_err().status,
            DSRS_STATUS_STALE_HANDLE,
            "double free"
        );

        // The slot is reused: the old handle stays stale, the new one works.
        let h2 = insert::<Thing>(Arc::new("b".into())).unwrap();
        assert_ne!(h, h2);
        assert_eq!(get(h, "x").unwrap_err().status, DSRS_STATUS_STALE_HANDLE);
        assert_eq!(*get(h2, "x").unwrap(), "b");

        let o = insert::<Other>(Arc::new(7)).unwrap();
        let e = get::<Thing>(o as *const Thing, "accel").unwrap_err();
        assert_eq!(e.status, DSRS_STATUS_WRONG_HANDLE_TYPE);
        assert!(
            e.message
                .contains("is a dsrs_buffer handle, but a test_thing is expected")
        );

        let local = 5u64;
        let e = get::<Thing>(&local as *const u64 as *const Thing, "accel").unwrap_err();
        assert_eq!(e.status, DSRS_STATUS_INVALID_HANDLE);
        let e = get::<Thing>(std::ptr::without_provenance(0x1234), "accel").unwrap_err();
        assert_eq!(e.status, DSRS_STATUS_INVALID_HANDLE);
        assert_eq!(
            get::<Thing>(std::ptr::null(), "accel").unwrap_err().status,
            DSRS_STATUS_NULL_ARGUMENT
        );
        assert!(remove::<Thing>(std::ptr::null_mut(), "accel").is_ok());
        remove(h2, "x").unwrap();
        remove(o, "o").unwrap();
    }

    #[test]
    fn an_object_outlives_a_concurrent_free() {
        let h = insert::<Thing>(Arc::new("kept".into())).unwrap();
        let held = get(h, "x").unwrap();
        remove(h, "x").unwrap();
        assert_eq!(*held, "kept");
    }
}
