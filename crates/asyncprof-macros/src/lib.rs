//! `#[asyncprof::main]`: use it in place of `#[tokio::main]` to run `main` on a runtime
//! with asyncprof's hooks installed. Re-exported by the `asyncprof` crate; see
//! `asyncprof::main` for the documentation.
#![forbid(unsafe_code)]

use proc_macro::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

/// Runs an `async fn` on an instrumented tokio runtime (see `asyncprof::main`).
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr, item) {
        Ok(ts) => ts,
        Err((span, msg)) => compile_error(span, &msg),
    }
}

type Failure = (Span, String);

fn expand(attr: TokenStream, item: TokenStream) -> Result<TokenStream, Failure> {
    let (multi_thread, workers) = parse_args(attr)?;
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let body = match tokens.pop() {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => g,
        other => {
            let span = other.map_or(Span::call_site(), |t| t.span());
            return Err((
                span,
                "#[asyncprof::main] goes on an `async fn` with a body".into(),
            ));
        }
    };
    let async_at = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "async"));
    let fn_at = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "fn"));
    match (async_at, fn_at) {
        (Some(a), Some(f)) if a < f => {
            tokens.remove(a);
        }
        _ => {
            return Err((
                body.span(),
                "#[asyncprof::main] goes on an `async fn`, like #[tokio::main]".into(),
            ))
        }
    }
    // { ::asyncprof::__private::run_main(MULTI, WORKERS, async move BODY) }
    let mut call = TokenStream::new();
    call.extend(path(&["asyncprof", "__private", "run_main"]));
    let mut args = TokenStream::new();
    args.extend([
        TokenTree::Ident(Ident::new(
            if multi_thread { "true" } else { "false" },
            Span::call_site(),
        )),
        TokenTree::Punct(Punct::new(',', Spacing::Alone)),
        TokenTree::Literal(Literal::usize_unsuffixed(workers)),
        TokenTree::Punct(Punct::new(',', Spacing::Alone)),
        TokenTree::Ident(Ident::new("async", Span::call_site())),
        TokenTree::Ident(Ident::new("move", Span::call_site())),
        TokenTree::Group(body),
    ]);
    call.extend([TokenTree::Group(Group::new(Delimiter::Parenthesis, args))]);
    let mut out: TokenStream = tokens.into_iter().collect();
    out.extend([TokenTree::Group(Group::new(Delimiter::Brace, call))]);
    Ok(out)
}

/// `::a::b::c`
fn path(segments: &[&str]) -> TokenStream {
    let mut ts = TokenStream::new();
    for s in segments {
        ts.extend([
            TokenTree::Punct(Punct::new(':', Spacing::Joint)),
            TokenTree::Punct(Punct::new(':', Spacing::Alone)),
            TokenTree::Ident(Ident::new(s, Span::call_site())),
        ]);
    }
    ts
}

/// `flavor = "multi_thread" | "current_thread"`, `worker_threads = N` (0: tokio's default).
fn parse_args(attr: TokenStream) -> Result<(bool, usize), Failure> {
    let mut multi_thread = true;
    let mut workers = 0usize;
    let tokens: Vec<TokenTree> = attr.into_iter().collect();
    for arg in tokens.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ',')) {
        match arg {
            [] => {}
            [TokenTree::Ident(key), TokenTree::Punct(eq), TokenTree::Literal(value)]
                if eq.as_char() == '=' =>
            {
                let v = value.to_string();
                match key.to_string().as_str() {
                    "flavor" => match v.trim_matches('"') {
                        "multi_thread" => multi_thread = true,
                        "current_thread" => multi_thread = false,
                        _ => {
                            return Err((
                                value.span(),
                                "flavor is \"multi_thread\" or \"current_thread\"".into(),
                            ))
                        }
                    },
                    "worker_threads" => {
                        workers = v.parse().map_err(|_| {
                            (
                                value.span(),
                                "worker_threads takes a whole number".to_string(),
                            )
                        })?;
                    }
                    other => {
                        return Err((
                            key.span(),
                            format!(
                            "unknown argument `{other}`: flavor and worker_threads are accepted"
                        ),
                        ))
                    }
                }
            }
            other => {
                let span = other.first().map_or(Span::call_site(), |t| t.span());
                return Err((
                    span,
                    "arguments look like `flavor = \"current_thread\"`".into(),
                ));
            }
        }
    }
    Ok((multi_thread, workers))
}

fn compile_error(span: Span, msg: &str) -> TokenStream {
    let mut lit = Literal::string(msg);
    lit.set_span(span);
    let mut ts = path(&["core", "compile_error"]);
    let mut bang = Punct::new('!', Spacing::Alone);
    bang.set_span(span);
    ts.extend([
        TokenTree::Punct(bang),
        TokenTree::Group(Group::new(
            Delimiter::Parenthesis,
            TokenTree::Literal(lit).into(),
        )),
        TokenTree::Punct(Punct::new(';', Spacing::Alone)),
    ]);
    ts
}
