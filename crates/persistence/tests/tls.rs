//! PostgreSQL over TLS (sqlx with rustls): `sslmode=require` against the machine's server
//! (which serves TLS with Debian's self-signed certificate), and `verify-ca`, `verify-full`,
//! client certificates and a password kept apart from the URL against a throwaway cluster that
//! accepts TLS connections only (`hostssl`), with certificates from a CA made here. Every
//! connection of a `Database` (both pools and the resume listener) goes over TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rendezvous_persistence::testing::{Backend, TestDatabase, postgres_admin_url};
use rendezvous_persistence::{Database, DatabaseConfig, PgTls, SslMode};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// A CA made for one test.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) with common name `cn`: (certificate
    /// PEM, key PEM).
    fn issue(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A throwaway cluster on 127.0.0.1 that accepts TLS connections only: password
/// (`scram-sha-256`) for `postgres`, a client certificate for `certuser`. Stopped on drop.
struct TlsCluster {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    ca_file: PathBuf,
}

const PASSWORD: &str = "tls-test-secret";
const DB: &str = "rendezvous_tls";

impl TlsCluster {
    fn start(ca: &Ca) -> Self {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        let bin = if bin.join("initdb").is_file() {
            bin
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .expect("PostgreSQL binaries under /usr/lib/postgresql")
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .filter(|b| b.join("initdb").is_file())
                .collect();
            found.sort();
            found.pop().expect("initdb under /usr/lib/postgresql/*/bin")
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("rendezvous-pg-tls-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let me = Self {
            ca_file: dir.join("ca.crt"),
            dir,
            bin,
            as_postgres: is_root(),
            port,
        };
        let (cert, key) = ca.issue("localhost", &["localhost"]);
        std::fs::write(&me.ca_file, &ca.pem).unwrap();
        std::fs::write(me.dir.join("server.crt"), cert).unwrap();
        std::fs::write(me.dir.join("server.key"), key).unwrap();
        me.run(
            Command::new("chmod")
                .arg("600")
                .arg(me.dir.join("server.key")),
        );
        if me.as_postgres {
            me.run(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(&me.dir),
            );
        }
        let data = me.dir.join("data");
        me.run(
            me.pg("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        // TCP connections without TLS are refused: whatever connects, connects over TLS.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             hostssl all certuser ::1/128 cert\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
        )
        .unwrap();
        let d = me.dir.display();
        me.run(
            me.pg("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {d} -c fsync=off -c ssl=on \
                     -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key \
                     -c ssl_ca_file={d}/ca.crt"
                ))
                .arg("-l")
                .arg(me.dir.join("server.log"))
                .args(["-w", "start"]),
        );
        me.psql(&format!(
            "ALTER USER postgres PASSWORD '{PASSWORD}'; CREATE USER certuser"
        ));
        me.psql(&format!("CREATE DATABASE {DB}"));
        me
    }

    fn pg(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, command: &mut Command) -> String {
        let out = command.current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL as `postgres` over the Unix socket; the output unaligned, tuples only.
    fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let mut c = self.pg("psql");
        c.arg("-h").arg(&self.dir).args([
            "-p", &port, "-U", "postgres", "-d", "postgres", "-Atqc", sql,
        ]);
        self.run(&mut c)
    }

    fn url(&self, user: &str, host: &str) -> String {
        format!("postgres://{user}@{host}:{}/{DB}", self.port)
    }

    /// A file in the cluster's directory, readable by the test.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let mut stop = self.pg("pg_ctl");
        stop.arg("-D").arg(&data).args(["-m", "immediate", "stop"]);
        let _ = stop.current_dir(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls(mode: SslMode, root: Option<&Path>) -> PgTls {
    PgTls {
        mode: Some(mode),
        root_cert: root.map(Path::to_path_buf),
        ..PgTls::default()
    }
}

fn config(url: String, password: Option<&str>, tls: PgTls) -> DatabaseConfig {
    DatabaseConfig {
        password: password.map(str::to_owned),
        tls,
        connect_timeout: Duration::from_secs(5),
        ..DatabaseConfig::new(url)
    }
}

async fn connect_err(config: DatabaseConfig) -> String {
    match Database::connect(&config).await {
        Ok(database) => {
            database.close().await;
            panic!("connected with {config:?}")
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_verify_ca_client_certificates_and_a_separate_password() {
    let ca = Ca::new("rendezvous test CA");
    let cluster = TlsCluster::start(&ca);
    let ca_file = cluster.ca_file.clone();

    // verify-full with the CA: migrations, both pools and the resume listener all connect.
    let database = Database::connect(&config(
        cluster.url("postgres", "localhost"),
        Some(PASSWORD),
        tls(SslMode::VerifyFull, Some(&ca_file)),
    ))
    .await
    .expect("verify-full with the CA that signed the server's certificate");
    let mut listening = String::new();
    for _ in 0..100 {
        listening = cluster.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = '{DB}' AND s.ssl AND a.query LIKE 'LISTEN%'"
        ));
        if listening.trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        listening.trim(),
        "1",
        "the resume listener connects over TLS"
    );
    let plain = cluster.psql(&format!(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{DB}'"
    ));
    let (unencrypted, all) = plain.trim().split_once('|').unwrap();
    assert_eq!(unencrypted, "0");
    assert!(all.parse::<u32>().unwrap() >= 4, "{plain}");
    database.close().await;

    // The same from the URL alone: its TLS parameters and password survive.
    let url = format!(
        "postgres://postgres:{PASSWORD}@localhost:{}/{DB}?sslmode=verify-full&sslrootcert={}",
        cluster.port,
        ca_file.display()
    );
    Database::connect(&config(url, None, PgTls::default()))
        .await
        .expect("the URL's sslmode and sslrootcert")
        .close()
        .await;

    // Without the CA (the system's roots only) the server's certificate is refused.
    let err = connect_err(config(
        cluster.url("postgres", "localhost"),
        Some(PASSWORD),
        tls(SslMode::VerifyFull, None),
    ))
    .await;
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer") && err.contains("verify-full"),
        "{err}"
    );
    // A CA that did not sign it: refused.
    let other = cluster.write("other-ca.crt", &Ca::new("another CA").pem);
    let err = connect_err(config(
        cluster.url("postgres", "localhost"),
        Some(PASSWORD),
        tls(SslMode::VerifyCa, Some(&other)),
    ))
    .await;
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The certificate names localhost, not 127.0.0.1: verify-full refuses the host,
    // verify-ca (the chain only) accepts it.
    let err = connect_err(config(
        cluster.url("postgres", "127.0.0.1"),
        Some(PASSWORD),
        tls(SslMode::VerifyFull, Some(&ca_file)),
    ))
    .await;
    assert!(
        err.contains("certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    Database::connect(&config(
        cluster.url("postgres", "127.0.0.1"),
        Some(PASSWORD),
        tls(SslMode::VerifyCa, Some(&ca_file)),
    ))
    .await
    .expect("verify-ca does not check the host name")
    .close()
    .await;

    // The password given apart wins over a wrong one in the URL; a wrong one is refused.
    let wrong_in_url = format!("postgres://postgres:wrong@localhost:{}/{DB}", cluster.port);
    Database::connect(&config(
        wrong_in_url.clone(),
        Some(PASSWORD),
        tls(SslMode::VerifyFull, Some(&ca_file)),
    ))
    .await
    .expect("the separate password wins")
    .close()
    .await;
    let err = connect_err(config(
        wrong_in_url,
        None,
        tls(SslMode::VerifyFull, Some(&ca_file)),
    ))
    .await;
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the message shows no password: {err}"
    );

    // Without TLS the server lets no one in.
    let err = connect_err(config(
        cluster.url("postgres", "localhost"),
        Some(PASSWORD),
        tls(SslMode::Disable, None),
    ))
    .await;
    assert!(err.contains("no encryption"), "{err}");

    // Certificate authentication: the client certificate's common name is the user.
    let (cert, key) = ca.issue("certuser", &[]);
    let cert = cluster.write("client.crt", &cert);
    let key = cluster.write("client.key", &key);
    let with_cert = PgTls {
        client_cert: Some(cert),
        client_key: Some(key),
        ..tls(SslMode::VerifyFull, Some(&ca_file))
    };
    Database::connect(&DatabaseConfig {
        run_migrations: false,
        ..config(cluster.url("certuser", "localhost"), None, with_cert)
    })
    .await
    .expect("a client certificate signed by the server's CA")
    .close()
    .await;
    let err = connect_err(DatabaseConfig {
        run_migrations: false,
        ..config(
            cluster.url("certuser", "localhost"),
            None,
            tls(SslMode::VerifyFull, Some(&ca_file)),
        )
    })
    .await;
    assert!(err.contains("certificate"), "{err}");
}

/// The machine's server serves TLS (Debian's self-signed certificate): `sslmode=require`
/// encrypts without verifying, from the URL or from the config, and every connection of the
/// database is encrypted; `disable` is not (the check can tell them apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_against_the_local_server() {
    let admin = sea_orm::Database::connect(format!("{}?sslmode=disable", postgres_admin_url()))
        .await
        .unwrap();
    let encrypted = async |name: &str| -> (i64, i64) {
        let row = admin
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) AS all \
                     FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                     WHERE a.datname = '{name}'"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        (
            row.try_get("", "tls").unwrap(),
            row.try_get("", "all").unwrap(),
        )
    };
    for (query, tls) in [
        ("?sslmode=require", PgTls::default()),
        ("", tls(SslMode::Require, None)),
        ("?sslmode=disable", PgTls::default()),
    ] {
        let db = TestDatabase::create(Backend::Postgres).await.unwrap();
        let name = db.url.rsplit('/').next().unwrap().to_owned();
        let database = Database::connect(&config(format!("{}{query}", db.url), None, tls.clone()))
            .await
            .unwrap_or_else(|e| panic!("{query} {tls:?}: {e}"));
        let mut counts = (0, 0);
        for _ in 0..100 {
            counts = encrypted(&name).await;
            if counts.1 >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (encrypted, all) = counts;
        assert!(all >= 4, "pools and listener: {counts:?}");
        if query == "?sslmode=disable" {
            assert_eq!(encrypted, 0, "{query}");
        } else {
            assert_eq!(encrypted, all, "{query} {tls:?}");
        }
        database.close().await;
    }
    let _ = admin.close().await;
}
