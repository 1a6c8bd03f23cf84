//! `spawn_app()`: the shared harness of every API test, and the client they talk through.
//!
//! A test asks as a caller (`app.caller(&token)` or `app.anonymous()`) and gets a [`Reply`]:
//! status, headers and JSON, as the contract states them. `expect`, `problem` and
//! `field_error` say what the contract promises of a reply; `at` asks another instance and
//! `with` adds headers. Raw `reqwest` requests remain only where a test needs what this
//! client does not do: send a broken body, or see a request fail in transport (a writer
//! killed mid-request, a failover under load).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ims_api::config::Settings;
use ims_api::startup::Application;
use ims_api::state::AppState;
use ims_testkit::RedisServer;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The value of header `name`, or `""`.
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The JWT secret every test server uses, so tests can mint their own tokens.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Where a test's database lives; removed when the test ends.
pub enum TestDb {
    /// Held only so the directory outlives the server.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; a separate thread with its own runtime
            // can block on the cleanup.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    use sqlx::Connection;
                    let mut conn = sqlx::AnyConnection::connect(&admin_url).await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await
                        .ok()
                });
                Ok::<_, std::io::Error>(())
            })
            .join();
        }
    }
}

/// A fresh database for one test: a SQLite file in a new directory, or a new PostgreSQL
/// database when `IMS_TEST_POSTGRES_URL` is set; its URL, and what removes it when dropped.
pub async fn fresh_database() -> (String, TestDb) {
    sqlx::any::install_default_drivers();
    match std::env::var("IMS_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(admin_url) => {
            use sqlx::Connection;
            let name = format!("ims_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::AnyConnection::connect(&admin_url)
                .await
                .expect("connect to IMS_TEST_POSTGRES_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let (base, query) = match admin_url.split_once('?') {
                Some((base, query)) => (base, format!("?{query}")),
                None => (admin_url.as_str(), String::new()),
            };
            let server = base
                .rsplit_once('/')
                .map(|(server, _)| server)
                .unwrap_or(base);
            (
                format!("{server}/{name}{query}"),
                TestDb::Postgres { admin_url, name },
            )
        }
        None => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("ims.db").display());
            (url, TestDb::Sqlite { _dir: dir })
        }
    }
}

/// A running server and the handles a test needs around it.
pub struct TestApp {
    /// `http://127.0.0.1:{port}`.
    pub address: String,
    pub client: reqwest::Client,
    /// This test's own Redis; stop and restart it at will.
    pub redis: RedisServer,
    /// The server's state (database and Redis handles), for checks a client cannot make.
    pub state: AppState,
    /// The database this server uses, so a second server can share it.
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    _db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a server with the default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts a server; `vars` override environment variables of contract §1.
pub async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    let redis = RedisServer::start();
    let (database_url, db) = fresh_database().await;
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url.clone()),
        ("REDIS_URL".into(), redis.url()),
        ("JWT_SECRET".into(), TEST_JWT_SECRET.into()),
        ("IMS_BIND".into(), "127.0.0.1:0".into()),
        // Tests hammer routes from one address; the rate-limit tests set real limits.
        ("RATE_LIMIT_GLOBAL".into(), "1000000/60".into()),
        ("RATE_LIMIT_AUTH".into(), "1000000/60".into()),
        ("RATE_LIMIT_USER".into(), "1000000/60".into()),
    ]);
    for (k, v) in vars {
        env.insert(k.to_string(), v.to_string());
    }
    let mut settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings");
    settings.redis.probe_interval = Duration::from_millis(100);
    let (address, state, shutdown) = start(settings).await;
    TestApp {
        address,
        client: client(),
        redis,
        state,
        database_url,
        shutdown: Some(shutdown),
        _db: db,
    }
}

/// A server built from `settings` on its own port, in this process: its address and state,
/// and the sender that stops it.
pub async fn start(settings: Settings) -> (String, AppState, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .expect("bind");
    let app = Application::build_with_listener(settings, listener)
        .await
        .expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (address, state, stop)
}

/// The HTTP client of the tests: generous time-out, so a hung server fails the test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A second API server in its own OS process (the real binary), sharing a test app's
/// database, Redis and JWT secret. Killed when dropped.
pub struct ServerProcess {
    pub address: String,
    child: std::process::Child,
}

impl ServerProcess {
    /// Starts `ims-api` next to `app` and waits until it answers `/health`.
    pub async fn beside(app: &TestApp) -> Self {
        Self::beside_with(app, &[]).await
    }

    /// Like [`ServerProcess::beside`], with extra environment variables.
    pub async fn beside_with(app: &TestApp, vars: &[(&str, &str)]) -> Self {
        let port = ims_testkit::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ims-api"))
            .env_clear()
            .current_dir(std::env::temp_dir())
            .env("IMS_BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &app.database_url)
            .env("REDIS_URL", app.redis.url())
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("RUST_LOG", "warn")
            // The limits of `spawn_app` (the processes share their Redis logs, and a log
            // counts against one limit): load tests send thousands of requests per client
            // and user; the rate-limit tests set their own.
            .env("RATE_LIMIT_GLOBAL", "1000000/60")
            .env("RATE_LIMIT_AUTH", "1000000/60")
            .env("RATE_LIMIT_USER", "1000000/60")
            // Last, so a test can override any of the above (a Redis behind a proxy, say).
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ims-api");
        let server = Self {
            address: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = app
                .client
                .get(format!("{}/health", server.address))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "second server never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    /// `GET /health/cache` of the server at `base` (this one or another process), as JSON.
    pub async fn cache_stats_at(&self, base: &str) -> Value {
        self.anonymous()
            .at(base)
            .get("/health/cache")
            .await
            .expect(StatusCode::OK)
    }

    /// `GET /health/cache` of this server, as JSON.
    pub async fn cache_stats(&self) -> Value {
        self.cache_stats_at(&self.address).await
    }

    /// Registers a user (and organization); returns its access token.
    pub async fn token(&self, email: &str) -> String {
        self.register(email).await["accessToken"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Registers a user (and organization); returns the token pair.
    pub async fn register(&self, email: &str) -> Value {
        self.anonymous()
            .create(
                "/auth/register",
                json!({"email": email, "password": "correct horse battery", "name": "Test User", "organizationName": "Test Org"}),
            )
            .await
    }

    /// Logs `email` in (registered with [`register`](Self::register)); the token pair.
    pub async fn login(&self, email: &str) -> Value {
        self.anonymous()
            .post(
                "/auth/login",
                json!({"email": email, "password": "correct horse battery"}),
            )
            .await
            .expect(StatusCode::OK)
    }

    /// Presents `refresh_token` at `/auth/refresh`.
    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.anonymous()
            .post("/auth/refresh", json!({"refreshToken": refresh_token}))
            .await
    }

    /// A plain connection to this test's Redis, for looking at keys as an operator would.
    pub fn redis_conn(&self) -> redis::Connection {
        redis::Client::open(self.redis.url())
            .and_then(|c| c.get_connection())
            .expect("redis connection")
    }

    /// Keys matching `pattern` in this test's Redis.
    pub fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.redis_conn();
        redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut conn)
            .expect("keys")
    }

    /// Waits until the server's Redis connection reports `up`.
    pub async fn wait_for_redis(&self, up: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.redis.is_connected() != up {
            assert!(
                Instant::now() < deadline,
                "redis never became {}",
                if up { "up" } else { "down" }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rows in the SQL fallback table of refresh tokens.
    pub async fn sql_refresh_tokens(&self) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(self.state.db.pool())
            .await
            .expect("count")
    }
}

/// Asserts an RFC 9457 problem with `status`; returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = header(&response, "content-type");
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// SHA-256 hex of a token, as the server keys it.
pub fn sha256(token: &str) -> String {
    ims_redis::session::hash_token(token)
}

// ---------------------------------------------------------------------------------------
// Requests as the contract reads them: a caller sends, the reply is a status, headers and
// JSON; `expect`, `problem` and `field_error` say what the contract promises of it.

/// One caller of the API: every request carries its bearer token, if it has one, and the
/// headers given with [`with`](Caller::with); it goes to the test's server, or to the one
/// given with [`at`](Caller::at).
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    app: &'a TestApp,
    base: &'a str,
    token: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
}

impl TestApp {
    /// The caller holding `token`.
    pub fn caller<'a>(&'a self, token: &'a str) -> Caller<'a> {
        Caller {
            app: self,
            base: &self.address,
            token: Some(token),
            headers: &[],
        }
    }

    /// A caller without a token (health, documents, logins, and 401s).
    pub fn anonymous(&self) -> Caller<'_> {
        Caller {
            app: self,
            base: &self.address,
            token: None,
            headers: &[],
        }
    }
}

impl<'a> Caller<'a> {
    /// The same caller asking the server at `base` (another instance: `http://host:port`).
    pub fn at(self, base: &'a str) -> Self {
        Self { base, ..self }
    }

    /// The same caller sending `headers` with every request too.
    pub fn with(self, headers: &'a [(&'a str, &'a str)]) -> Self {
        Self { headers, ..self }
    }

    /// Sends `method path` with an optional JSON body; the whole reply, body read.
    pub async fn send(self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let request = format!(
            "{method} {}{path} {}",
            self.base,
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let mut builder = self
            .app
            .client
            .request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        if let Some(token) = self.token {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in self.headers {
            builder = builder.header(*name, *value);
        }
        let response = builder.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        Reply {
            request,
            status,
            headers,
            parsed: serde_json::from_str(&text).ok(),
            text,
        }
    }

    pub async fn get(self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn put(self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }

    /// POSTs `body`, asserts `201 Created`; the new row.
    pub async fn create(self, path: &str, body: Value) -> Value {
        self.post(path, body).await.expect(StatusCode::CREATED)
    }
}

/// An answer: status, headers and body, with the request it answers (for messages).
#[derive(Debug)]
pub struct Reply {
    request: String,
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON, if it is JSON.
    parsed: Option<Value>,
    pub text: String,
}

impl Reply {
    /// Asserts `status`; the JSON body (`Null` when the body is empty).
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.request, self.text);
        self.json_body()
    }

    /// Asserts an RFC 9457 problem with `status`; its body.
    #[track_caller]
    pub fn problem(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.request, self.text);
        assert_eq!(self.header("content-type"), "application/problem+json");
        let body = self.json_body();
        assert_eq!(body["status"], status.as_u16());
        assert!(
            body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        body
    }

    /// Asserts a 422 problem that names `field` in `errors`; its body.
    #[track_caller]
    pub fn field_error(self, field: &str) -> Value {
        let problem = self.problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            problem["errors"][field].is_array(),
            "expected an error for {field}: {problem}"
        );
        problem
    }

    /// The value of header `name`, or `""`.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The JSON body, whatever the status (`Null` when the body is empty).
    #[track_caller]
    pub fn json(&self) -> Value {
        match &self.parsed {
            Some(json) => json.clone(),
            None if self.text.is_empty() => Value::Null,
            None => panic!("{}: not JSON: {}", self.request, self.text),
        }
    }

    #[track_caller]
    fn json_body(self) -> Value {
        self.json()
    }
}

// ---------------------------------------------------------------------------------------
// Users, raw bodies (a `reqwest::Response`, for JSON a client could not send), ids.

/// Registers `email` (a new organization); returns (access token, organization id).
pub async fn user(app: &TestApp, email: &str) -> (String, String) {
    let pair = app.register(email).await;
    (
        pair["accessToken"].as_str().expect("token").to_string(),
        pair["user"]["organizationId"]
            .as_str()
            .expect("org")
            .to_string(),
    )
}

/// A request with a raw body sent as `application/json`, for malformed JSON.
pub async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &str,
    token: &str,
) -> Response {
    app.client
        .request(method, format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

pub fn id(row: &Value) -> String {
    row["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id in {row}"))
        .to_string()
}

pub async fn rows_in(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(app.state.db.pool())
        .await
        .expect("count")
}

/// One organization's catalog: a user and one row of each kind, enough for every read of
/// a single row or a list to return 200.
pub struct Org {
    pub token: String,
    pub org_id: String,
    pub item: String,
    pub warehouse: String,
    pub customer: String,
    pub vendor: String,
    pub category: String,
    pub tax: String,
}

pub async fn org(app: &TestApp, email: &str) -> Org {
    let (token, org_id) = user(app, email).await;
    let api = app.caller(&token);
    let new = |path: &'static str, body: Value| async move { id(&api.create(path, body).await) };
    let category = new("/categories", json!({"name": "Tools"})).await;
    let tax = new("/tax-rates", json!({"name": "VAT", "rateBps": 2000})).await;
    let warehouse = new("/warehouses", json!({"name": "Main", "code": "M"})).await;
    let item = new("/items", json!({"name": "Hammer", "sku": "H-1", "priceCents": 1500, "costCents": 700, "categoryId": category, "taxRateId": tax})).await;
    let customer = new("/contacts", json!({"type": "customer", "name": "Ann"})).await;
    let vendor = new("/contacts", json!({"type": "vendor", "name": "Acme"})).await;
    Org {
        token,
        org_id,
        item,
        warehouse,
        customer,
        vendor,
        category,
        tax,
    }
}

/// Reads with `read` every `every` until it returns `want`, and returns how long after
/// `since` that was; fails once `limit` has passed since `since`.
pub async fn until_seen<T, F, Fut>(
    want: T,
    since: Instant,
    limit: Duration,
    every: Duration,
    mut read: F,
) -> Duration
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    loop {
        let seen = read().await;
        if seen == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "{want:?} never showed up: still {seen:?} after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(every).await;
    }
}

/// The string `field` of a JSON answer.
pub fn text_field(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .to_string()
}

/// A replay of the rotated `replayed` token is refused, and so is afterwards the live token
/// of `successor` (a token pair): the replay ended the session.
pub async fn replay_ends_the_session(app: &TestApp, replayed: &str, successor: &Value) {
    app.refresh(replayed)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    app.refresh(&text_field(successor, "refreshToken"))
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

/// `GET /auth/sessions`: the first page of the sessions the access token's user has open.
pub async fn sessions(app: &TestApp, access: &str) -> Vec<Value> {
    let list: Value = app.caller(access).get("/auth/sessions").await.json();
    list["data"].as_array().expect("data").clone()
}
