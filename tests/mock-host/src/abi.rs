//! The host functions a proxy-wasm module imports, answered from
//! [`HostState`] as Envoy answers them: statuses, the host allocating what
//! it returns in the module's memory (through the module's own
//! `proxy_on_memory_allocate`), header pairs in the ABI's serialised form.

use wasmi::{Caller, Error, Extern, Linker, Memory};

use crate::{GrpcCall, GrpcStream, HostState, LocalReply};

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const PARSE_FAILURE: i32 = 4;
/// What a host answers for a call it does not implement.
const UNIMPLEMENTED: i32 = 12;

/// The ABI's buffer types, as numbered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody = 0,
    ResponseBody = 1,
    GrpcReceive = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

/// The ABI's header maps, as numbered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders = 0,
    ResponseHeaders = 2,
}

type Host<'a> = Caller<'a, HostState>;

fn memory(caller: &Host<'_>) -> Result<Memory, Error> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| Error::new("the module exports no memory"))
}

fn at(value: i32) -> usize {
    usize::try_from(value as u32).unwrap_or(usize::MAX)
}

fn read(caller: &Host<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Error> {
    let mut out = vec![0; at(len)];
    memory(caller)?.read(caller, at(ptr), &mut out)?;
    Ok(out)
}

fn write(caller: &mut Host<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Error> {
    let memory = memory(caller)?;
    memory.write(caller, at(ptr), bytes)?;
    Ok(())
}

/// A gRPC call's or stream's cluster, service and method, as text.
fn read_target(
    caller: &Host<'_>,
    parts: [(i32, i32); 3],
) -> Result<(String, String, String), Error> {
    let [cluster, service, method] = parts
        .map(|(ptr, len)| read(caller, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned()));
    Ok((cluster?, service?, method?))
}

fn write_u32(caller: &mut Host<'_>, ptr: i32, value: u32) -> Result<(), Error> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the module as Envoy does: allocated in its memory by
/// its `proxy_on_memory_allocate`, pointer and size written where asked.
fn hand_over(
    caller: &mut Host<'_>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<i32, Error> {
    let size = i32::try_from(bytes.len()).map_err(|_| Error::new("value too large"))?;
    let ptr = if bytes.is_empty() {
        0
    } else {
        let allocate = caller
            .get_export("proxy_on_memory_allocate")
            .and_then(Extern::into_func)
            .ok_or_else(|| Error::new("the module exports no proxy_on_memory_allocate"))?
            .typed::<i32, i32>(&*caller)?;
        let ptr = allocate.call(&mut *caller, size)?;
        write(caller, ptr, bytes)?;
        ptr
    };
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, size as u32)?;
    Ok(OK)
}

fn headers_of(state: &mut HostState, map: i32) -> Option<&mut Vec<(Vec<u8>, Vec<u8>)>> {
    match map {
        0 => Some(&mut state.request_headers),
        2 => Some(&mut state.response_headers),
        _ => None,
    }
}

fn encode(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let names: Vec<String> = pairs
        .iter()
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect();
    let borrowed: Vec<(&str, &[u8])> = names
        .iter()
        .zip(pairs)
        .map(|(n, (_, v))| (n.as_str(), v.as_slice()))
        .collect();
    filter_common::wire::encode_pairs(&borrowed)
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> Result<(), Error> {
    let wasi = "wasi_snapshot_preview1";
    linker.func_wrap(wasi, "random_get", |mut c: Host<'_>, ptr: i32, len: i32| {
        c.data_mut().tally("random_get");
        {
            let state = c.data_mut();
            let bytes: Vec<u8> = (0..at(len))
                .map(|_| {
                    state.random = state.random.wrapping_mul(31).wrapping_add(17);
                    state.random
                })
                .collect();
            write(&mut c, ptr, &bytes).map(|()| OK)
        }
    })?;
    linker.func_wrap(wasi, "environ_get", |mut c: Host<'_>, _: i32, _: i32| {
        c.data_mut().tally("environ_get");
        OK
    })?;
    linker.func_wrap(
        wasi,
        "environ_sizes_get",
        |mut c: Host<'_>, count: i32, size: i32| {
            c.data_mut().tally("environ_sizes_get");
            {
                write_u32(&mut c, count, 0)?;
                write_u32(&mut c, size, 0).map(|()| OK)
            }
        },
    )?;
    linker.func_wrap(
        wasi,
        "clock_time_get",
        |mut c: Host<'_>, _id: i32, _precision: i64, ret: i32| {
            c.data_mut().tally("clock_time_get");
            {
                let now = c.data().now_nanos;
                write(&mut c, ret, &now.to_le_bytes()).map(|()| OK)
            }
        },
    )?;
    linker.func_wrap(
        wasi,
        "fd_write",
        |mut c: Host<'_>, _fd: i32, iovs: i32, count: i32, written: i32| {
            c.data_mut().tally("fd_write");
            {
                let mut text = Vec::new();
                for i in 0..count {
                    let iov = read(&c, iovs + i * 8, 8)?;
                    let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    text.extend(read(&c, ptr, len)?);
                }
                let n = text.len() as u32;
                c.data_mut()
                    .logs
                    .push((u32::MAX, String::from_utf8_lossy(&text).into_owned()));
                write_u32(&mut c, written, n).map(|()| OK)
            }
        },
    )?;
    linker.func_wrap(
        wasi,
        "proc_exit",
        |mut c: Host<'_>, code: i32| -> Result<(), Error> {
            c.data_mut().tally("proc_exit");
            Err(Error::i32_exit(code))
        },
    )?;

    let env = "env";
    linker.func_wrap(
        env,
        "proxy_log",
        |mut c: Host<'_>, level: i32, ptr: i32, len: i32| {
            c.data_mut().tally("proxy_log");
            {
                let line = String::from_utf8_lossy(&read(&c, ptr, len)?).into_owned();
                c.data_mut().logs.push((level as u32, line));
                Ok::<_, Error>(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_tick_period_milliseconds",
        |mut c: Host<'_>, ms: i32| {
            c.data_mut().tally("proxy_set_tick_period_milliseconds");
            {
                c.data_mut().tick_period_ms = Some(ms as u32);
                OK
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_send_local_response",
        |mut c: Host<'_>,
         status: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32| {
            c.data_mut().tally("proxy_send_local_response");
            {
                let body = read(&c, bp, bl)?;
                let headers = filter_common::wire::decode_pairs(&read(&c, hp, hl)?)
                    .ok_or_else(|| Error::new("malformed local reply headers"))?;
                let context = c.data().effective_context;
                c.data_mut().local_replies.push(LocalReply {
                    status: status as u32,
                    body,
                    headers,
                    context,
                });
                Ok::<_, Error>(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_buffer_bytes",
        |mut c: Host<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| {
            c.data_mut().tally("proxy_set_buffer_bytes");
            {
                let bytes = read(&c, ptr, len)?;
                let state = c.data_mut();
                let buffer = match kind {
                    0 => &mut state.request_body,
                    1 => &mut state.response_body,
                    _ => return Ok::<_, Error>(BAD_ARGUMENT),
                };
                let start = at(start).min(buffer.len());
                let end = start.saturating_add(at(size)).min(buffer.len());
                buffer.splice(start..end, bytes);
                Ok(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_replace_header_map_value",
        |mut c: Host<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            c.data_mut().tally("proxy_replace_header_map_value");
            {
                let (name, value) = (read(&c, kp, kl)?, read(&c, vp, vl)?);
                let Some(headers) = headers_of(c.data_mut(), map) else {
                    return Ok::<_, Error>(BAD_ARGUMENT);
                };
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                headers.push((name, value));
                Ok(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_add_header_map_value",
        |mut c: Host<'_>, map: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            c.data_mut().tally("proxy_add_header_map_value");
            {
                let (name, value) = (read(&c, kp, kl)?, read(&c, vp, vl)?);
                let Some(headers) = headers_of(c.data_mut(), map) else {
                    return Ok::<_, Error>(BAD_ARGUMENT);
                };
                headers.push((name, value));
                Ok(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_remove_header_map_value",
        |mut c: Host<'_>, map: i32, kp: i32, kl: i32| {
            c.data_mut().tally("proxy_remove_header_map_value");
            {
                let name = read(&c, kp, kl)?;
                let Some(headers) = headers_of(c.data_mut(), map) else {
                    return Ok::<_, Error>(BAD_ARGUMENT);
                };
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                Ok(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_header_map_pairs",
        |mut c: Host<'_>, map: i32, ptr: i32, len: i32| {
            c.data_mut().tally("proxy_set_header_map_pairs");
            {
                let pairs = filter_common::wire::decode_pairs(&read(&c, ptr, len)?)
                    .ok_or_else(|| Error::new("malformed header pairs"))?;
                let Some(headers) = headers_of(c.data_mut(), map) else {
                    return Ok::<_, Error>(BAD_ARGUMENT);
                };
                *headers = pairs;
                Ok(OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_value",
        |mut c: Host<'_>, map: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32| {
            c.data_mut().tally("proxy_get_header_map_value");
            {
                let name = read(&c, kp, kl)?;
                let Some(headers) = headers_of(c.data_mut(), map) else {
                    return Ok::<_, Error>(BAD_ARGUMENT);
                };
                let Some(value) = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                    .map(|(_, v)| v.clone())
                else {
                    return Ok(NOT_FOUND);
                };
                hand_over(&mut c, &value, ret_ptr, ret_size)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_pairs",
        |mut c: Host<'_>, map: i32, ret_ptr: i32, ret_size: i32| {
            c.data_mut().tally("proxy_get_header_map_pairs");
            {
                let Some(headers) = headers_of(c.data_mut(), map) else {
                    return Ok::<_, Error>(BAD_ARGUMENT);
                };
                let encoded = encode(headers);
                hand_over(&mut c, &encoded, ret_ptr, ret_size)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_buffer_bytes",
        |mut c: Host<'_>, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| {
            c.data_mut().tally("proxy_get_buffer_bytes");
            {
                let (start, max) = (at(start), at(max));
                let state = c.data_mut();
                let buffer = match kind {
                    0 => &state.request_body,
                    1 => &state.response_body,
                    5 => &state.grpc_receive,
                    6 => &state.vm_configuration,
                    7 => {
                        state.configuration_reads.push((start, max));
                        &state.plugin_configuration
                    }
                    _ => return Ok::<_, Error>(NOT_FOUND),
                };
                if start > buffer.len() {
                    return Ok(BAD_ARGUMENT);
                }
                let end = start.saturating_add(max).min(buffer.len());
                let slice = buffer[start..end].to_vec();
                hand_over(&mut c, &slice, ret_ptr, ret_size)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_property",
        |mut c: Host<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| {
            c.data_mut().tally("proxy_get_property");
            {
                let path = read(&c, pp, pl)?;
                let Some(value) = c.data().properties.get(&path).cloned() else {
                    return Ok::<_, Error>(NOT_FOUND);
                };
                hand_over(&mut c, &value, ret_ptr, ret_size)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_property",
        |mut c: Host<'_>, _: i32, _: i32, _: i32, _: i32| {
            c.data_mut().tally("proxy_set_property");
            OK
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_current_time_nanoseconds",
        |mut c: Host<'_>, ret: i32| {
            c.data_mut().tally("proxy_get_current_time_nanoseconds");
            {
                let now = c.data().now_nanos;
                write(&mut c, ret, &now.to_le_bytes()).map(|()| OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_define_metric",
        |mut c: Host<'_>, _kind: i32, np: i32, nl: i32, ret: i32| {
            c.data_mut().tally("proxy_define_metric");
            {
                let name = String::from_utf8_lossy(&read(&c, np, nl)?).into_owned();
                let state = c.data_mut();
                state.metrics.push(name);
                let id = state.metrics.len() as u32;
                write_u32(&mut c, ret, id).map(|()| OK)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_increment_metric",
        |mut c: Host<'_>, _: i32, _: i64| {
            c.data_mut().tally("proxy_increment_metric");
            OK
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_continue_stream",
        |mut c: Host<'_>, kind: i32| {
            c.data_mut().tally("proxy_continue_stream");
            {
                let state = c.data_mut();
                state.resumed.push(kind as u32);
                state.resumed_contexts.push(state.effective_context);
                OK
            }
        },
    )?;
    linker.func_wrap(env, "proxy_close_stream", |mut c: Host<'_>, _: i32| {
        c.data_mut().tally("proxy_close_stream");
        OK
    })?;
    linker.func_wrap(env, "proxy_done", |mut c: Host<'_>| {
        c.data_mut().tally("proxy_done");
        OK
    })?;
    linker.func_wrap(
        env,
        "proxy_set_effective_context",
        |mut c: Host<'_>, context: i32| {
            let state = c.data_mut();
            state.tally("proxy_set_effective_context");
            state.effective_context = context;
            OK
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_call",
        |mut c: Host<'_>,
         up: i32,
         ul: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         _mdp: i32,
         _mdl: i32,
         msgp: i32,
         msgl: i32,
         timeout: i32,
         token_ptr: i32| {
            c.data_mut().tally("proxy_grpc_call");
            {
                let (cluster, service, method) = read_target(&c, [(up, ul), (sp, sl), (mp, ml)])?;
                let message = read(&c, msgp, msgl)?;
                let state = c.data_mut();
                state.next_token += 1;
                let token = state.next_token;
                state.grpc_calls.push(GrpcCall {
                    token,
                    cluster,
                    service,
                    method,
                    message,
                    timeout_ms: timeout as u32,
                });
                write_u32(&mut c, token_ptr, token).map(|()| OK)
            }
        },
    )?;
    linker.func_wrap(env, "proxy_grpc_cancel", |mut c: Host<'_>, _: i32| {
        c.data_mut().tally("proxy_grpc_cancel");
        OK
    })?;
    linker.func_wrap(env, "proxy_grpc_close", |mut c: Host<'_>, token: i32| {
        let state = c.data_mut();
        state.tally("proxy_grpc_close");
        match state
            .grpc_streams
            .iter_mut()
            .find(|s| s.token == token as u32)
        {
            Some(stream) => {
                stream.closed_by_module = true;
                OK
            }
            None => NOT_FOUND,
        }
    })?;
    linker.func_wrap(
        env,
        "proxy_get_status",
        |mut c: Host<'_>, code_ptr: i32, msg_ptr: i32, msg_size: i32| {
            c.data_mut().tally("proxy_get_status");
            {
                let (code, message) = c.data().grpc_status.clone();
                write_u32(&mut c, code_ptr, code)?;
                hand_over(&mut c, &message, msg_ptr, msg_size)
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_stream",
        |mut c: Host<'_>,
         up: i32,
         ul: i32,
         sp: i32,
         sl: i32,
         mp: i32,
         ml: i32,
         _mdp: i32,
         _mdl: i32,
         token_ptr: i32| {
            c.data_mut().tally("proxy_grpc_stream");
            if c.data().refuse_grpc_streams {
                // As Envoy answers for a cluster it does not know.
                return Ok(PARSE_FAILURE);
            }
            let (cluster, service, method) = read_target(&c, [(up, ul), (sp, sl), (mp, ml)])?;
            let state = c.data_mut();
            state.next_token += 1;
            let token = state.next_token;
            state.grpc_streams.push(GrpcStream {
                token,
                cluster,
                service,
                method,
                messages: Vec::new(),
                closed_by_module: false,
                ended: false,
            });
            write_u32(&mut c, token_ptr, token).map(|()| OK)
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_send",
        |mut c: Host<'_>, token: i32, mp: i32, ml: i32, _end: i32| {
            c.data_mut().tally("proxy_grpc_send");
            let message = read(&c, mp, ml)?;
            let state = c.data_mut();
            Ok(
                match state
                    .grpc_streams
                    .iter_mut()
                    .find(|s| s.token == token as u32 && !s.ended)
                {
                    Some(stream) => {
                        stream.messages.push(message);
                        OK
                    }
                    None => NOT_FOUND,
                },
            )
        },
    )?;
    // Not used by the gateway's filters: present so the module links. Of
    // these only the foreign function (`clear_route_cache`) is called, and
    // counted in `host_calls`.
    linker.func_wrap(
        env,
        "proxy_http_call",
        |_: Host<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32| UNIMPLEMENTED,
    )?;
    linker.func_wrap(
        env,
        "proxy_call_foreign_function",
        |mut c: Host<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            c.data_mut().tally("proxy_call_foreign_function");
            UNIMPLEMENTED
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_shared_data",
        |_: Host<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| NOT_FOUND,
    )?;
    linker.func_wrap(
        env,
        "proxy_set_shared_data",
        |_: Host<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| UNIMPLEMENTED,
    )?;
    linker.func_wrap(
        env,
        "proxy_register_shared_queue",
        |_: Host<'_>, _: i32, _: i32, _: i32| UNIMPLEMENTED,
    )?;
    linker.func_wrap(
        env,
        "proxy_resolve_shared_queue",
        |_: Host<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| NOT_FOUND,
    )?;
    linker.func_wrap(
        env,
        "proxy_enqueue_shared_queue",
        |_: Host<'_>, _: i32, _: i32, _: i32| NOT_FOUND,
    )?;
    linker.func_wrap(
        env,
        "proxy_dequeue_shared_queue",
        |_: Host<'_>, _: i32, _: i32, _: i32| NOT_FOUND,
    )?;
    Ok(())
}
