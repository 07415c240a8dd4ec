//! The thin layer over proxy-wasm host calls that filters share.

use proxy_wasm::hostcalls;

use crate::GatewayError;

/// Sends `error` as the local reply of the current stream.
pub fn send_error(error: &GatewayError) {
    let body = error.body();
    let headers = error.response_headers();
    if let Err(status) = hostcalls::send_http_response(error.status, headers, Some(&body)) {
        log::error!("send_http_response failed: {status:?}");
    }
}
