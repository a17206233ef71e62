//! A local shop: product pages over HTTP, each with a title and a price to parse.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Html;
use axum::routing::get;
use axum::Router;

use crate::{mix, Upstream};

/// Serve product pages, each answered after `latency`.
pub(crate) fn serve(upstream: &Upstream, latency: Duration) -> std::io::Result<SocketAddr> {
    let router = Router::new()
        .route("/product/{id}", get(page))
        .with_state(latency);
    upstream.http(router)
}

async fn page(State(latency): State<Duration>, Path(id): Path<u64>) -> Html<String> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let cents = 100 + mix(id, 7) % 100_000;
    let mut body = format!(
        "<html><head><title>Product {id}</title></head><body>\
         <h1 class=\"title\">Product {id}</h1><span class=\"price\">{}.{:02}</span><ul>",
        cents / 100,
        cents % 100
    );
    for i in 0..20 {
        body.push_str(&format!(
            "<li class=\"review\">Review {i} of product {id}: fine.</li>"
        ));
    }
    body.push_str("</ul></body></html>");
    Html(body)
}

/// A parsed product page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Product {
    pub(crate) title: String,
    pub(crate) cents: u64,
}

/// Parse a product page: its title and price.
pub(crate) fn parse(html: &str) -> Option<Product> {
    let title = between(html, "<h1 class=\"title\">", "</h1>")?;
    let price = between(html, "<span class=\"price\">", "</span>")?;
    let (units, cents) = price.split_once('.')?;
    Some(Product {
        title: title.to_string(),
        cents: units.parse::<u64>().ok()? * 100 + cents.parse::<u64>().ok()?,
    })
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

/// The price the shop gives product `id`, for checking parses.
pub(crate) fn price_of(id: u64) -> u64 {
    100 + mix(id, 7) % 100_000
}
