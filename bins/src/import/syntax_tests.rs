//! Tests of the tokenizer, the block tree and includes.

use super::*;

fn words(stmts: &[Stmt]) -> Vec<String> {
    stmts.iter().map(Stmt::text).collect()
}

#[test]
fn keepalived_lines_blocks_comments_and_quotes() {
    let src = Source::new(
        "k.conf",
        "! comment\nvrrp_script chk {\n  script \"/bin/x -q\"  # why\n}\nvrrp_instance VI_1\n{\n state MASTER\n virtual_ipaddress { 192.168.1.5 }\n}\n",
    );
    let t = parse(&src, KEEPALIVED, Ends::Newline).unwrap();
    assert_eq!(words(&t), ["vrrp_script chk", "vrrp_instance VI_1"]);
    assert_eq!(words(t[0].children()), ["script /bin/x -q"]);
    assert_eq!(t[0].children()[0].loc.line, 3);
    assert_eq!(t[1].loc.line, 5);
    let inst = t[1].children();
    assert_eq!(words(inst), ["state MASTER", "virtual_ipaddress"]);
    assert_eq!(words(inst[1].children()), ["192.168.1.5"]);
}

#[test]
fn nginx_statements_end_with_semicolons() {
    let src = Source::new(
        "n.conf",
        "stream {\n log_format basic '$a $b' \"x\\\"y\";\n server { listen 53 udp; proxy_pass\n up; }\n}\n",
    );
    let t = parse(&src, NGINX, Ends::Semicolon).unwrap();
    let stream = t[0].children();
    assert_eq!(stream[0].words, ["log_format", "basic", "$a $b", "x\"y"]);
    assert_eq!(
        words(stream[1].children()),
        ["listen 53 udp", "proxy_pass up"]
    );
    assert_eq!(stream[1].children()[1].loc.line, 3);
}

#[test]
fn unbalanced_braces_are_located() {
    let open = Source::new("a.conf", "vrrp_instance A {\n  state MASTER\n");
    let e = parse(&open, KEEPALIVED, Ends::Newline)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "a.conf:1: unbalanced braces: the block of `vrrp_instance A` is never closed"
    );
    let close = Source::new("b.conf", "a\n}\n");
    let e = parse(&close, KEEPALIVED, Ends::Newline)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "b.conf:2: unbalanced braces: `}` closes no block");
    let semi = Source::new("c.conf", "server {\n listen 53\n}\n");
    let e = parse(&semi, NGINX, Ends::Semicolon)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "c.conf:3: unexpected `}`: `listen 53` is missing its `;`"
    );
    let quote = Source::new("d.conf", "a \"b\n\nc");
    let e = parse(&quote, NGINX, Ends::Semicolon)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "d.conf:1: unterminated \"quote\"");
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let text = "a {".repeat(100_000);
    let e = parse(&Source::new("deep", &text), NGINX, Ends::Semicolon).unwrap_err();
    assert!(e.to_string().contains("nested deeper than 64"), "{e}");
}

#[test]
fn includes_are_spliced_in_and_loops_refused() {
    let mut loader = MapLoader::default();
    loader
        .files
        .insert("b.conf".into(), "x 1\ninclude c.conf\n".into());
    loader.files.insert("c.conf".into(), "y 2\n".into());
    let src = Source::new("a.conf", "top {\n include b.conf\n}\ninclude none*\n");
    let mut w = Vec::new();
    let t = parse_with_includes(&src, KEEPALIVED, Ends::Newline, &mut loader, &mut w).unwrap();
    assert_eq!(words(t[0].children()), ["x 1", "y 2"]);
    assert_eq!(t[0].children()[1].loc.to_string(), "c.conf:1");
    assert_eq!(w.len(), 1);
    assert_eq!(
        w[0].to_string(),
        "a.conf:4: warning: include `none*` matches no file: nothing included"
    );

    loader
        .files
        .insert("c.conf".into(), "include b.conf\n".into());
    let e = parse_with_includes(&src, KEEPALIVED, Ends::Newline, &mut loader, &mut w)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "c.conf:1: include loop: a.conf -> b.conf -> c.conf -> b.conf"
    );

    let missing = Source::new("m.conf", "include gone.conf\n");
    let e = parse_with_includes(&missing, KEEPALIVED, Ends::Newline, &mut loader, &mut w)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("m.conf:1: include `gone.conf`: cannot read"),
        "{e}"
    );
}
