//! The serving side of the admin API (`/cmd/`): checks access and the body's
//! size through [`crate::admin::Admin::admit`], reads a capped body, awaits
//! the admin module's reply (computed on the fetch runtime) and sends it.
//! Ordinary requests never come here.

use std::io;
use std::net::SocketAddr;

use super::body::{self, SendVia};
use super::conn::Conn;
use super::http::{self, Framing, Request};
use super::response::{Body, CacheStatus, Response};
use super::Shared;
use crate::admin::AdminRequest;

/// Answers one admin request; returns the status and what was sent.
pub(super) async fn answer(
    shared: &Shared,
    stream: &mut Conn,
    reader: &mut http::Reader,
    req: &Request,
    peer: SocketAddr,
    framing: Framing,
    via: &SendVia<'_>,
) -> (u16, CacheStatus, io::Result<u64>) {
    let admin_req = AdminRequest {
        method: req.method.as_str(),
        path: &req.path,
        query: req.query.as_deref(),
        authorization: req.authorization.as_deref(),
        peer,
        content_length: req.content_length,
        has_body: req.has_body,
    };
    let reply = match shared.admin.admit(&admin_req) {
        Err(reply) => reply,
        Ok(len) => {
            let body = match len {
                Some(n) => match reader.read_body(stream, n as usize, shared.settings.header_timeout).await {
                    Ok(body) => body,
                    Err(_) => {
                        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "request body not sent in time");
                        return (400, CacheStatus::None, Err(e));
                    }
                },
                None => Vec::new(),
            };
            shared.admin.handle(&admin_req, body).await
        }
    };
    let mut resp = Response::new(reply.status, Body::Bytes(reply.body), CacheStatus::None)
        .header("Content-Type", reply.content_type)
        .header("Cache-Control", "no-store");
    resp.headers.extend(reply.headers);
    let status = resp.status;
    (status, CacheStatus::None, body::send(stream, resp, framing, via).await)
}
