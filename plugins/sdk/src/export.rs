//! The plugin side of the boundary: decoding requests, catching panics,
//! allocating replies. Used by [`crate::export_volume_plugin!`].

use crate::{Buffer, PluginError, PluginTable, STATUS_INTERNAL, STATUS_INVALID_ARGUMENT, STATUS_OK};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A `PluginTable` in a `static`: its pointers are to static data only.
pub struct StaticTable(pub PluginTable);

// SAFETY: the table holds pointers to static, immutable strings and to
// functions; nothing in it is ever written after construction.
unsafe impl Sync for StaticTable {}
// SAFETY: as above: moving pointers to static data between threads is harmless.
unsafe impl Send for StaticTable {}

fn into_buffer(bytes: Vec<u8>) -> Buffer {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed) as *mut u8;
    Buffer { ptr, len }
}

/// Frees a reply made by [`dispatch`].
///
/// # Safety
/// `buffer` must come from [`dispatch`] of this library and be freed once.
pub unsafe extern "C" fn free_buffer(buffer: Buffer) {
    if buffer.ptr.is_null() {
        return;
    }
    // SAFETY: `dispatch` made this buffer from a boxed slice of exactly `len`
    // bytes, and the caller frees it once.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(buffer.ptr, buffer.len)) });
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn reply_error(e: &PluginError) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"message": e.message})).unwrap_or_default()
}

/// Decodes the request, runs `op`, encodes the reply; a panic anywhere in
/// between becomes `STATUS_INTERNAL` with the panic's message.
///
/// # Safety
/// `request` must point to `len` readable bytes (or be null with `len` 0) and
/// `reply` to a writable [`Buffer`].
pub unsafe fn dispatch<Req, Resp>(
    request: *const u8,
    len: usize,
    reply: *mut Buffer,
    op: impl FnOnce(Req) -> Result<Resp, PluginError>,
) -> i32
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let bytes: &[u8] = if request.is_null() || len == 0 {
        b"{}"
    } else {
        // SAFETY: the caller guarantees `len` readable bytes at `request`.
        unsafe { std::slice::from_raw_parts(request, len) }
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let req: Req = serde_json::from_slice(bytes)
            .map_err(|e| PluginError::new(STATUS_INVALID_ARGUMENT, format!("invalid request: {e}")))?;
        let resp = op(req)?;
        serde_json::to_vec(&resp).map_err(|e| PluginError::internal(format!("encode reply: {e}")))
    }));
    let (code, body) = match outcome {
        Ok(Ok(body)) => (STATUS_OK, body),
        Ok(Err(e)) => {
            let code = if e.code == STATUS_OK { STATUS_INTERNAL } else { e.code };
            (code, reply_error(&e))
        }
        Err(p) => (
            STATUS_INTERNAL,
            reply_error(&PluginError::internal(format!(
                "plugin panicked: {}",
                panic_message(&*p)
            ))),
        ),
    };
    if !reply.is_null() {
        // SAFETY: the caller guarantees `reply` is writable.
        unsafe { reply.write(into_buffer(body)) };
    }
    code
}

/// Exports `$plugin` (a type implementing [`crate::VolumePlugin`] and
/// `Default`) as a peapod volume plugin named `$name`.
///
/// ```ignore
/// export_volume_plugin!(MyPlugin, name = "my-plugin", version = env!("CARGO_PKG_VERSION"));
/// ```
#[macro_export]
macro_rules! export_volume_plugin {
    ($plugin:ty, name = $name:expr, version = $version:expr) => {
        const _: () = {
            use $crate::VolumePlugin as _;

            fn __plugin() -> &'static $plugin {
                static PLUGIN: ::std::sync::OnceLock<$plugin> = ::std::sync::OnceLock::new();
                PLUGIN.get_or_init(<$plugin as ::core::default::Default>::default)
            }

            macro_rules! __entry {
                ($fn_name:ident, $method:ident) => {
                    unsafe extern "C" fn $fn_name(request: *const u8, len: usize, reply: *mut $crate::Buffer) -> i32 {
                        // SAFETY: the host passes `len` readable bytes and a writable reply slot.
                        unsafe { $crate::__private::dispatch(request, len, reply, |r| __plugin().$method(r)) }
                    }
                };
            }
            __entry!(__init, init);
            __entry!(__provision, provision);
            __entry!(__delete, delete);
            __entry!(__stage, stage);
            __entry!(__unstage, unstage);
            __entry!(__publish, publish);
            __entry!(__unpublish, unpublish);
            __entry!(__stats, get_volume_stats);
            __entry!(__expand, expand);

            #[no_mangle]
            pub extern "C" fn peapod_volume_plugin() -> *const $crate::PluginTable {
                static NAME: &str = ::core::concat!($name, "\0");
                static VERSION: &str = ::core::concat!($version, "\0");
                static TABLE: ::std::sync::OnceLock<$crate::__private::StaticTable> = ::std::sync::OnceLock::new();
                let table = TABLE.get_or_init(|| {
                    // Capabilities come from the plugin; a panic there must not cross the boundary.
                    let caps = ::std::panic::catch_unwind(|| __plugin().capabilities()).unwrap_or(0);
                    $crate::__private::StaticTable($crate::PluginTable {
                        struct_size: ::core::mem::size_of::<$crate::PluginTable>() as u32,
                        abi_major: $crate::ABI_MAJOR,
                        abi_minor: $crate::ABI_MINOR,
                        name: NAME.as_ptr() as *const ::std::os::raw::c_char,
                        version: VERSION.as_ptr() as *const ::std::os::raw::c_char,
                        capabilities: caps,
                        free_buffer: Some($crate::__private::free_buffer),
                        init: Some(__init),
                        provision: Some(__provision),
                        delete_volume: Some(__delete),
                        stage: Some(__stage),
                        unstage: Some(__unstage),
                        publish: Some(__publish),
                        unpublish: Some(__unpublish),
                        get_volume_stats: Some(__stats),
                        expand: Some(__expand),
                    })
                });
                &table.0
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn call<Req: Serialize, Resp: Serialize>(
        req: &Req,
        op: impl FnOnce(serde_json::Value) -> Result<Resp, PluginError>,
    ) -> (i32, serde_json::Value) {
        let bytes = serde_json::to_vec(req).unwrap();
        let mut reply = Buffer {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: valid request bytes and reply slot; the reply is freed below.
        let code = unsafe { dispatch(bytes.as_ptr(), bytes.len(), &mut reply, op) };
        // SAFETY: the reply was just made by dispatch.
        let out = unsafe { std::slice::from_raw_parts(reply.ptr, reply.len) }.to_vec();
        // SAFETY: freed once.
        unsafe { free_buffer(reply) };
        (code, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn replies_errors_and_panics_cross_as_json() {
        let (code, v) = call(&serde_json::json!({"a": 1}), Ok::<_, PluginError>);
        assert_eq!((code, v), (STATUS_OK, serde_json::json!({"a": 1})));
        let (code, v) = call(&serde_json::json!({}), |_| {
            Err::<(), _>(PluginError::not_found("no such volume"))
        });
        assert_eq!(
            (code, v),
            (STATUS_NOT_FOUND, serde_json::json!({"message": "no such volume"}))
        );
        let (code, v) = call(&serde_json::json!({}), |_| -> Result<(), PluginError> {
            panic!("boom")
        });
        assert_eq!(code, STATUS_INTERNAL);
        assert_eq!(v["message"], "plugin panicked: boom");
    }

    #[test]
    fn bad_requests_are_invalid_argument() {
        let bytes = b"not json";
        let mut reply = Buffer {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: valid bytes and reply slot.
        let code = unsafe {
            dispatch(bytes.as_ptr(), bytes.len(), &mut reply, |_: PublishRequest| {
                Ok(PublishResponse::default())
            })
        };
        assert_eq!(code, STATUS_INVALID_ARGUMENT);
        // SAFETY: made by dispatch, freed once.
        unsafe { free_buffer(reply) };
    }

    #[test]
    fn schema_is_camel_case_and_tolerant() {
        let req: PublishRequest = serde_json::from_value(serde_json::json!({
            "volumeId": "v", "targetPath": "/t", "readOnly": true,
            "volumeContext": {"medium": "Memory"}, "pod": {"uid": "u"}, "future": 1}))
        .unwrap();
        assert_eq!(req.volume_id, "v");
        assert!(req.read_only);
        assert_eq!(req.volume_context["medium"], "Memory");
        assert_eq!(req.pod.uid, "u");
        let stats = serde_json::to_value(VolumeStats {
            used_bytes: 5,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(stats["usedBytes"], 5);
    }
}
