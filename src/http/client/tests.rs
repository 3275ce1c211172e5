//! The client against real loopback servers that write scripted raw answers.

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;

enum Step {
    /// Reads one request (head and Content-Length body) and keeps it.
    Req,
    Send(Vec<u8>),
    Pause(u64),
}
use Step::*;

fn send(s: &str) -> Step {
    Send(s.as_bytes().to_vec())
}

/// A server taking one connection per script, in order; it returns the requests it read.
fn server(conns: Vec<Vec<Step>>) -> (String, JoinHandle<Vec<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for steps in conns {
            let (mut s, _) = l.accept().unwrap();
            let mut reqs = Vec::new();
            for step in steps {
                match step {
                    Req => reqs.push(read_request(&mut s)),
                    Send(b) => {
                        let _ = s.write_all(&b);
                    }
                    Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
                }
            }
            seen.push(reqs);
        }
        seen
    });
    (addr, h)
}

fn read_request(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        got.push(b[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.parse::<usize>().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

fn client(addr: &str, limit: u64) -> Client<Tcp> {
    let tcp = Tcp {
        authority: addr.to_owned(),
    };
    let limit = Duration::from_millis(limit);
    Client::new(tcp, limit, Some(limit))
}

const GET: Request = Request {
    method: "GET",
    target: "/pods",
    headers: &[],
    body: None,
};

/// One GET's status and body (limit 1 KiB), or the error.
fn get(c: &Client<Tcp>) -> Result<(u16, Vec<u8>), Error> {
    let mut r = c.send(&GET)?;
    let body = r.read_to_vec(1024)?;
    Ok((r.status, body))
}

fn err(c: &Client<Tcp>) -> String {
    match get(c) {
        Ok((s, b)) => panic!("answered {s} {:?}", String::from_utf8_lossy(&b)),
        Err(e) => format!("{e:?} {e}"),
    }
}

#[test]
fn chunked_with_extensions_and_trailers_split_across_reads() {
    let (addr, h) = server(vec![
        vec![
            Req,
            send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"x\"\r\nhe"),
            Pause(50),
            send("llo\r\n6 \r\n world\r"),
            Pause(50),
            send("\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n"),
        ],
        vec![
            Req,
            send("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
        ],
    ]);
    let c = client(&addr, 2000);
    assert_eq!(get(&c).unwrap(), (200, b"hello world".to_vec()));
    assert_eq!(get(&c).unwrap(), (201, b"ok".to_vec()));
    assert_eq!(h.join().unwrap().len(), 2, "a fresh connection each call");
}

#[test]
fn a_connection_that_failed_mid_answer_is_not_retried() {
    let (addr, h) = server(vec![
        vec![Req, send("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")],
        vec![Req, send("HTTP/1.1 200 OK\r\nContent-Le")],
    ]);
    // Each call a fresh connection, nothing retried.
    let c = client(&addr, 2000);
    assert_eq!(get(&c).unwrap().1, b"a");
    let e = err(&c);
    assert!(e.contains("closed in the answer's head"), "{e}");
    assert_eq!(h.join().unwrap().len(), 2);
}

#[test]
fn close_delimited_unread_http_1_0_and_empty_bodies() {
    let (addr, h) = server(vec![
        vec![Req, send("HTTP/1.1 200 OK\r\n\r\nto the end")],
        vec![Req, send("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")],
        vec![Req, send("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")],
        vec![
            Req,
            send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\ny"),
        ],
        vec![Req, send("HTTP/1.1 204 No Content\r\n\r\n")],
    ]);
    let c = client(&addr, 2000);
    assert_eq!(get(&c).unwrap().1, b"to the end");
    // Dropped with its body unread.
    assert_eq!(c.send(&GET).unwrap().status, 200);
    assert_eq!(get(&c).unwrap().1, b"x");
    assert_eq!(get(&c).unwrap().1, b"y");
    assert_eq!(get(&c).unwrap(), (204, vec![]));
    assert_eq!(h.join().unwrap().len(), 5);
}

#[test]
fn bad_chunks_are_errors() {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
    let cases = [
        ("zz\r\n", "bad chunk size"),
        ("-1\r\n", "bad chunk size"),
        ("\r\n", "bad chunk size"),
        ("1ffffffffffffffff\r\n", "bad chunk size"),
        (long.as_str(), "chunk-size line over"),
        ("2\r\nabc\r\n0\r\n\r\n", "chunk longer than its size"),
        ("5\r\nab", "closed before the end"),
        ("0\r\nX: 1\r\n", "closed in a trailer"),
    ];
    for (body, want) in cases {
        let (addr, _h) = server(vec![vec![Req, Send(format!("{head}{body}").into_bytes())]]);
        let e = err(&client(&addr, 2000));
        assert!(e.contains(want), "{body:?}: {e}");
    }
}

#[test]
fn bodies_over_the_limit_declared_or_not() {
    // Declared: refused before a byte is read (none is sent; reading would time out).
    let (addr, _h) = server(vec![vec![
        Req,
        send("HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n"),
        Pause(4000),
    ]]);
    assert!(err(&client(&addr, 2000)).contains("TooLarge"));
    let big = "x".repeat(1025);
    for head in [
        "HTTP/1.1 200 OK\r\n\r\n".to_owned(),
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n{big}\r\n0\r\n\r\n"),
    ] {
        let (addr, _h) = server(vec![vec![Req, Send(format!("{head}{big}").into_bytes())]]);
        assert!(err(&client(&addr, 2000)).contains("TooLarge"));
    }
    // At the limit exactly: fine.
    let (addr, _h) = server(vec![vec![
        Req,
        Send(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n{}",
                &big[1..]
            )
            .into_bytes(),
        ),
    ]]);
    assert_eq!(get(&client(&addr, 2000)).unwrap().1.len(), 1024);
}

#[test]
fn bad_heads_are_clear_errors() {
    let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "v".repeat(MAX_HEAD));
    let cases = [
        ("HTTP/1.1 abc\r\n\r\n".to_owned(), "not an HTTP answer"),
        ("SSH-2.0-OpenSSH\r\n\r\n".to_owned(), "not an HTTP answer"),
        ("HTTP/1.1 101 Switching\r\n\r\n".to_owned(), "status 101"),
        ("HTTP/1.1 700 Odd\r\n\r\n".to_owned(), "status 700"),
        (
            format!("HTTP/1.1 200 OK\r\n{many}\r\n"),
            "more than 64 headers",
        ),
        (format!("HTTP/1.1 200 OK\r\n{huge}\r\n"), "head over 16 KiB"),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n".to_owned(),
            "two different",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n".to_owned(),
            "bad Content-Length",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc".to_owned(),
            "closed before the end",
        ),
        ("".to_owned(), "closed before an answer"),
    ];
    for (answer, want) in cases {
        let (addr, _h) = server(vec![vec![Req, Send(answer.clone().into_bytes())]]);
        let e = err(&client(&addr, 2000));
        assert!(e.contains(want), "{answer:.40?}: {e}");
    }
}

#[test]
fn the_whole_call_is_bounded_by_its_deadline() {
    // No answer at all; then an answer whose body stalls half-way.
    let (addr, _h) = server(vec![vec![Req, Pause(1500)]]);
    assert!(matches!(get(&client(&addr, 300)), Err(Error::Timeout)));
    let (addr, _h) = server(vec![vec![
        Req,
        send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        Pause(1500),
    ]]);
    let t = Instant::now();
    assert!(matches!(get(&client(&addr, 300)), Err(Error::Timeout)));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn requests_carry_host_agent_and_length_and_nothing_is_followed() {
    let (addr, h) = server(vec![
        vec![
            Req,
            send("HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"),
        ],
        vec![Req, send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")],
    ]);
    let c = client(&addr, 2000);
    let post = Request {
        method: "POST",
        target: "/x",
        headers: &[("Authorization", "Bearer t")],
        body: None,
    };
    assert_eq!(c.send(&post).unwrap().read_to_vec(10).unwrap(), b"");
    let put = Request {
        method: "PUT",
        body: Some(b"{}"),
        ..post
    };
    assert_eq!(c.send(&put).unwrap().status, 200);
    let seen: Vec<String> = h.join().unwrap().into_iter().flatten().collect();
    let agent = concat!("User-Agent: yurt-ota/", env!("CARGO_PKG_VERSION"));
    assert!(seen[0].starts_with(&format!("POST /x HTTP/1.1\r\nHost: {addr}\r\n{agent}\r\n")));
    assert!(seen[0].contains("Authorization: Bearer t\r\nContent-Length: 0\r\n\r\n"));
    assert!(
        seen[1].ends_with("Content-Length: 2\r\n\r\n{}"),
        "{}",
        seen[1]
    );
    // A line break in a header value is refused, never sent.
    let bad = Request {
        headers: &[("Authorization", "Bearer a\r\nX: b")],
        ..post
    };
    assert!(matches!(c.send(&bad), Err(Error::Protocol(_))));
}

#[test]
fn refused_and_streamed() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(matches!(
        get(&client(&port.to_string(), 500)),
        Err(Error::Connect(_))
    ));
    // A watch-like stream read line by line as it arrives.
    let (addr, _h) = server(vec![vec![
        Req,
        send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na\nb\n\r\n"),
        Pause(50),
        send("2\r\nc\n\r\n0\r\n\r\n"),
    ]]);
    let mut r = client(&addr, 2000).send(&GET).unwrap();
    let lines: Vec<String> = (&mut r).lines().map(Result::unwrap).collect();
    assert_eq!(lines, ["a", "b", "c"]);
}

#[test]
fn authorities() {
    assert_eq!(connect::split_authority("h:1", 80), Some(("h", 1)));
    assert_eq!(connect::split_authority("h", 443), Some(("h", 443)));
    assert_eq!(
        connect::split_authority("[::1]:6443", 443),
        Some(("::1", 6443))
    );
    assert_eq!(connect::split_authority("[::1]", 443), Some(("::1", 443)));
    assert_eq!(connect::split_authority("h:x", 80), None);
    assert_eq!(connect::split_authority(":1", 80), None);
    assert_eq!(
        split_http_base("http://127.0.0.1:10267"),
        ("127.0.0.1:10267", "")
    );
    assert_eq!(split_http_base("http://h:1/hub/v1"), ("h:1", "/hub/v1"));
}

#[test]
fn the_fuzz_seeds_read_the_same_whole_and_split() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/http_response");
    for f in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(f.unwrap().path()).unwrap();
        for step in 1..=16u8 {
            let mut d = data.clone();
            d[0] = step;
            fuzz_response(&d);
        }
    }
}

#[test]
fn interim_1xx_answers_before_the_final_one_are_not_a_failure() {
    // Issue 23 item 8: a 100 Continue or a 103 Early Hints (RFC 9110 15.2) came before the final
    // answer, and the call failed ("status 103 ... not a valid final status"). Split across
    // reads, and with the final head in the same packet as the interim one.
    let (addr, h) = server(vec![
        vec![
            Req,
            send("HTTP/1.1 100 Continue\r\n\r\n"),
            Pause(30),
            send("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 20"),
            Pause(30),
            send("0 OK\r\nContent-Length: 2\r\n\r\nok"),
        ],
        vec![
            Req,
            send("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx"),
        ],
        // A POST (an upgrade call): the interim answer, then the hub's final one.
        vec![
            Req,
            send("HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\nStart updating pod ns/pod-1"),
        ],
    ]);
    let c = client(&addr, 2000);
    assert_eq!(get(&c).unwrap(), (200, b"ok".to_vec()));
    assert_eq!(get(&c).unwrap(), (201, b"x".to_vec()));
    let post = Request {
        method: "POST",
        target: "/openyurt.io/v1/namespaces/ns/pods/pod-1/upgrade",
        headers: &[],
        body: None,
    };
    let mut r = client(&addr, 2000).send(&post).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.read_to_vec(100).unwrap(), b"Start updating pod ns/pod-1");
    assert_eq!(h.join().unwrap().len(), 3);
}

#[test]
fn endless_interim_answers_are_bounded() {
    let many = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1);
    let (addr, _h) = server(vec![vec![Req, Send(many.into_bytes())]]);
    let e = err(&client(&addr, 2000));
    assert!(e.contains("interim (1xx) answers"), "{e}");
}
