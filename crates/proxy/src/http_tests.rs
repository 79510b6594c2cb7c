use super::*;

fn parse(head: &str) -> Result<Request, String> {
    parse_request(head.as_bytes())
}

fn target(head: &str) -> Target {
    parse(head).unwrap().target
}

fn err(head: &str) -> String {
    match parse(head) {
        Err(e) => e,
        Ok(r) => panic!("{head:?} accepted as {r:?}"),
    }
}

async fn read(input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut reader = input;
    read_head(&mut reader).await
}

#[tokio::test]
async fn head_and_pipelined_rest_are_split() {
    let (head, rest) = read(b"CONNECT a:1 HTTP/1.1\r\nX: y\r\n\r\nhello")
        .await
        .unwrap();
    assert_eq!(head, b"CONNECT a:1 HTTP/1.1\r\nX: y\r\n\r\n");
    assert_eq!(rest, b"hello");
    let (head, rest) = read(b"GET http://a/ HTTP/1.0\n\n").await.unwrap();
    assert_eq!(head, b"GET http://a/ HTTP/1.0\n\n");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn head_limits() {
    assert!(matches!(
        read(b"GET / HTTP/1.1\r\n").await,
        Err(HeadError::Closed)
    ));
    assert!(matches!(read(b"").await, Err(HeadError::Closed)));
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(HEAD_LIMIT));
    assert!(matches!(
        read(huge.as_bytes()).await,
        Err(HeadError::TooLarge)
    ));
    let endless = vec![b'a'; HEAD_LIMIT * 2];
    assert!(matches!(read(&endless).await, Err(HeadError::TooLarge)));
    // Exactly at the limit is fine.
    let prefix = "GET / HTTP/1.1\r\nX: ";
    let fill = HEAD_LIMIT - prefix.len() - 4;
    let exact = format!("{prefix}{}\r\n\r\n", "a".repeat(fill));
    assert_eq!(exact.len(), HEAD_LIMIT);
    assert!(read(exact.as_bytes()).await.is_ok());
}

#[test]
fn connect_targets() {
    assert_eq!(
        target("CONNECT pypi.org:443 HTTP/1.1\r\n\r\n"),
        Target::Connect {
            host: "pypi.org".into(),
            port: 443
        }
    );
    assert_eq!(
        target("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n"),
        Target::Connect {
            host: "::1".into(),
            port: 8443
        }
    );
    assert!(err("CONNECT pypi.org HTTP/1.1\r\n\r\n").contains("needs a port"));
    assert!(err("CONNECT pypi.org:0 HTTP/1.1\r\n\r\n").contains("port 0"));
    assert!(err("CONNECT pypi.org:65536 HTTP/1.1\r\n\r\n").contains("invalid port"));
    assert!(err("CONNECT pypi.org:+443 HTTP/1.1\r\n\r\n").contains("invalid port"));
    assert!(err("CONNECT pypi.org:x HTTP/1.1\r\n\r\n").contains("invalid port"));
    assert!(err("CONNECT :443 HTTP/1.1\r\n\r\n").contains("empty host"));
    assert!(err("CONNECT ::1:443 HTTP/1.1\r\n\r\n").contains("brackets"));
    assert!(err("CONNECT [::1 HTTP/1.1\r\n\r\n").contains("unterminated"));
    assert!(err("CONNECT [::1]x:1 HTTP/1.1\r\n\r\n").contains("malformed authority"));
    assert!(err("CONNECT u@a.com:443 HTTP/1.1\r\n\r\n").contains("credentials"));
}

#[test]
fn absolute_targets() {
    assert_eq!(
        target("GET http://example.com/a?b=c HTTP/1.1\r\n\r\n"),
        Target::Absolute {
            host: "example.com".into(),
            port: 80,
            path: "/a?b=c".into()
        }
    );
    assert_eq!(
        target("POST HTTP://example.com:8080 HTTP/1.1\r\n\r\n"),
        Target::Absolute {
            host: "example.com".into(),
            port: 8080,
            path: "/".into()
        }
    );
    assert_eq!(
        target("GET http://[2001:db8::1]?q#frag HTTP/1.1\r\n\r\n"),
        Target::Absolute {
            host: "2001:db8::1".into(),
            port: 80,
            path: "/?q".into()
        }
    );
    assert!(err("GET https://example.com/ HTTP/1.1\r\n\r\n").contains("use CONNECT"));
    assert!(err("GET ftp://example.com/ HTTP/1.1\r\n\r\n").contains("scheme"));
    assert!(err("GET example.com HTTP/1.1\r\n\r\n").contains("neither a path"));
    assert!(err("GET http://good.com@evil.com/ HTTP/1.1\r\n\r\n").contains("credentials"));
    assert!(err("GET http:///x HTTP/1.1\r\n\r\n").contains("empty host"));
    assert!(err("GET http://a.com:0/ HTTP/1.1\r\n\r\n").contains("port 0"));
    assert_eq!(target("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Target::Origin);
    assert_eq!(target("OPTIONS * HTTP/1.1\r\n\r\n"), Target::Origin);
}

#[test]
fn malformed_heads() {
    assert!(err("\r\n\r\n").contains("request line"));
    assert!(err("GET  http://a/ HTTP/1.1\r\n\r\n").contains("request line"));
    assert!(err("GET http://a/ HTTP/1.1 x\r\n\r\n").contains("request line"));
    assert!(err("G(T http://a/ HTTP/1.1\r\n\r\n").contains("method"));
    assert!(err("GET http://a/ HTTP/2\r\n\r\n").contains("version"));
    assert!(err("GET http://a/ HTTP/1.1\r\nNoColon\r\n\r\n").contains("header line"));
    assert!(err("GET http://a/ HTTP/1.1\r\nBad Name: x\r\n\r\n").contains("header name"));
    assert!(err("GET http://a/ HTTP/1.1\r\nA: b\r\n c\r\n\r\n").contains("folded"));
    assert!(parse_request(b"GET http://a/ HTTP/1.1\r\nA: \xff\r\n\r\n")
        .unwrap_err()
        .contains("UTF-8"));
}

#[test]
fn origin_form_rewrite() {
    let req = parse(
        "POST http://example.com:8080/up?x=1 HTTP/1.1\r\n\
         Host: evil.example\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Connection: keep-alive, X-Secret\r\n\
         X-Secret: 1\r\n\
         Keep-Alive: 5\r\n\
         Content-Length: 3\r\n\
         Accept:  */* \r\n\r\n",
    )
    .unwrap();
    let Target::Absolute { host, port, path } = &req.target else {
        panic!("not absolute: {req:?}");
    };
    let head = String::from_utf8(origin_form_head(&req, host, *port, path)).unwrap();
    assert_eq!(
        head,
        "POST /up?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 3\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    let req = parse("GET http://[::1]/ HTTP/1.0\r\n\r\n").unwrap();
    let head = String::from_utf8(origin_form_head(&req, "::1", 80, "/")).unwrap();
    assert_eq!(
        head,
        "GET / HTTP/1.0\r\nHost: [::1]\r\nConnection: close\r\n\r\n"
    );
}
