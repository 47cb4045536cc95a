use axum::body::Bytes;

use super::*;

fn sorted(frame: Message) -> Frame {
    client_frame(Some(Ok(frame)))
}

/// The error message and close code of a refused frame.
fn refusal(frame: Frame) -> (String, u16) {
    let Frame::Bad(ending) = frame else {
        panic!("not refused")
    };
    let Some(ExecEvent::Error { code, message }) = ending.event else {
        panic!("no error event")
    };
    assert_eq!(code, "invalid_request");
    (message, ending.code)
}

/// A local server whose one route waits for the start frame (at most
/// `window`) and ends as the exec WebSocket would; its URL.
async fn start_server(window: Duration) -> String {
    async fn route(upgrade: WebSocketUpgrade, window: Duration) -> Response {
        upgrade.on_upgrade(move |mut socket| async move {
            let ending = match first_frame(&mut socket, window).await {
                Ok((request, _, _)) => Ending::after(ExecEvent::Error {
                    code: "started".into(),
                    message: request.argv.join(" "),
                }),
                Err(Some(ending)) => ending,
                Err(None) => return,
            };
            finish(&mut socket, ending).await;
        })
    }
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move |upgrade: WebSocketUpgrade| route(upgrade, window)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The server's frames: its events' (code, message), then the close code.
async fn frames(url: &str, send: Option<&str>) -> (Vec<(String, String)>, Option<u16>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    if let Some(text) = send {
        ws.send(Ws::text(text)).await.unwrap();
    }
    let mut events = Vec::new();
    loop {
        match ws.next().await.expect("a frame").unwrap() {
            Ws::Text(text) => match serde_json::from_str(text.as_str()).unwrap() {
                ExecEvent::Error { code, message } => events.push((code, message)),
                other => panic!("{other:?}"),
            },
            Ws::Close(frame) => return (events, frame.map(|f| u16::from(f.code))),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_first_frame_must_be_a_start_in_time() {
    let window = Duration::from_millis(300);
    let url = start_server(window).await;
    let start = r#"{"type":"start","request":{"argv":["sh","-l"]}}"#;
    let (events, close) = frames(&url, Some(start)).await;
    assert_eq!(events, [("started".into(), "sh -l".into())]);
    assert_eq!(close, Some(close_code::NORMAL));

    let t = std::time::Instant::now();
    let (events, close) = frames(&url, None).await;
    assert!(t.elapsed() >= window);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "invalid_request");
    assert!(
        events[0].1.contains("no start frame within 0.3 s"),
        "{events:?}"
    );
    assert_eq!(close, Some(close_code::POLICY));

    let (events, _) = frames(&url, Some(r#"{"type":"stdin_end"}"#)).await;
    assert!(events[0].1.contains("not `stdin_end`"), "{events:?}");
}

#[test]
fn client_frames_are_sorted_and_bad_ones_named() {
    let ok = sorted(Message::text(r#"{"type":"signal","signal":"INT"}"#));
    assert!(matches!(
        ok,
        Frame::Message(ExecClientMessage::Signal { .. })
    ));
    assert!(matches!(
        sorted(Message::Ping(Bytes::new())),
        Frame::Control
    ));
    assert!(matches!(sorted(Message::Close(None)), Frame::Gone));
    assert!(matches!(client_frame(None), Frame::Gone));

    let (message, code) = refusal(sorted(Message::text(r#"{"type":"stdn","data":""}"#)));
    assert!(message.contains("stdn"), "{message}");
    assert_eq!(code, close_code::POLICY);
    let (message, _) = refusal(sorted(Message::binary(vec![1, 2])));
    assert!(message.contains("binary"), "{message}");
    let huge = format!(
        r#"{{"type":"stdin","data":"{}"}}"#,
        "A".repeat(MAX_CLIENT_FRAME)
    );
    let (message, code) = refusal(sorted(Message::text(huge)));
    assert!(message.contains("larger than"), "{message}");
    assert_eq!(code, close_code::SIZE);
}
