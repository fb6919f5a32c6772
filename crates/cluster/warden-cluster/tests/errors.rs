//! A node's errors carry their causes as values: bad TLS files name the file and say what is
//! wrong with it as a `TlsProblem`, a port already in use is `StartProblem::Listen` with the
//! `std::io::Error` (kind `AddrInUse`), and a data directory that cannot be created is a
//! `StorageProblem::Open` holding redb's `Io` error, and one written by a build of another
//! store format is refused as `OpenCause::Format`, left as it was. Real files, a real socket,
//! a real node start.

mod support;

use support::pki::{pem_files, pki, tls};
use warden_cluster::raft::log_store::{OpenCause, FILE_NAME, STORE_FORMAT};
use warden_cluster::{
    ClusterError, Node, NodeConfig, StartProblem, StorageProblem, TlsProblem, TlsSettings, Transport, TransportConfig,
};

fn tls_problem(result: Result<TlsSettings, ClusterError>) -> (std::path::PathBuf, TlsProblem) {
    match result {
        Err(ClusterError::Tls { path, cause }) => (path, cause),
        Err(other) => panic!("not a TLS error: {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn bad_tls_files_name_the_file_and_what_is_wrong_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pem_files(dir.path());
    TlsSettings::from_pem_files(&ca, &cert, &key, "warden-node").expect("good files are accepted");

    let missing = dir.path().join("missing.pem");
    let (path, cause) = tls_problem(TlsSettings::from_pem_files(&missing, &cert, &key, "warden-node"));
    assert_eq!(path, missing);
    assert!(matches!(cause, TlsProblem::Pem(_)), "{cause:?}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (path, cause) = tls_problem(TlsSettings::from_pem_files(&ca, &empty, &key, "warden-node"));
    assert_eq!(path, empty);
    assert!(matches!(cause, TlsProblem::NoCertificate), "{cause:?}");

    // A certificate where the key should be: no key in the file.
    let (path, cause) = tls_problem(TlsSettings::from_pem_files(&ca, &cert, &cert, "warden-node"));
    assert_eq!(path, cert);
    assert!(matches!(cause, TlsProblem::Pem(_)), "{cause:?}");

    // The CA's own certificate with the node's key: rustls refuses the pair.
    let (path, cause) = tls_problem(TlsSettings::from_pem_files(&ca, &ca, &key, "warden-node"));
    assert_eq!(path, ca);
    assert!(matches!(cause, TlsProblem::Rustls(_)), "{cause:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_listen_error_with_its_io_kind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = TransportConfig::new("errors-port", "errors-cookie");
    config.port = taken.local_addr().unwrap().port();
    config.tls = Some(tls(&pki()));
    let Err(err) = Transport::start(config).await else { panic!("started on a port that is taken") };
    match &err {
        ClusterError::Start { addr, cause: StartProblem::Listen(io), .. } => {
            assert_eq!(*addr, taken.local_addr().unwrap());
            assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        }
        other => panic!("not a listen error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_that_cannot_exist_is_a_storage_error_holding_the_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut config = NodeConfig::new("errors-storage", "errors-cookie").data_dir(file.join("sub"));
    config.found = true;
    let Err(err) = Node::start(config, Vec::new()).await else { panic!("started with no directory under a file") };
    match &err {
        ClusterError::Storage { name, cause } => {
            assert_eq!(name, "errors-storage");
            let StorageProblem::Open(open) = &**cause else { panic!("not the database: {err}") };
            assert!(open.path.ends_with("raft.redb"), "{err}");
            assert!(matches!(open.cause, OpenCause::Database(redb::Error::Io(_))), "{err}");
        }
        other => panic!("not a storage error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_store_format_is_refused_and_left_as_it_was() {
    use redb::ReadableDatabase;
    // The store's meta table, as the store names it.
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("warden_raft_meta");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    // A later build's file: the one meta value that says so (MessagePack, as the store writes it).
    let newer = STORE_FORMAT + 1;
    {
        let db = redb::Database::create(&file).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().insert("format", [newer as u8].as_slice()).unwrap();
        tx.commit().unwrap();
    }
    let mut config = NodeConfig::new("errors-format", "errors-cookie").data_dir(dir.path());
    config.found = true;
    let Err(err) = Node::start(config, Vec::new()).await else { panic!("started on a store of format {newer}") };
    match &err {
        ClusterError::Storage { cause, .. } => {
            let StorageProblem::Open(open) = &**cause else { panic!("not the database: {err}") };
            assert!(open.path.ends_with(FILE_NAME), "{err}");
            assert!(
                matches!(open.cause, OpenCause::Format { found, ours } if found == newer && ours == STORE_FORMAT),
                "{err}"
            );
        }
        other => panic!("not a storage error: {other}"),
    }
    // Left as it was (redb itself may rewrite its header on open): still the newer format,
    // and the node wrote nothing into it (no identity, no tables of its own).
    let db = redb::Database::open(&file).unwrap();
    let tx = db.begin_read().unwrap();
    let table = tx.open_table(META).unwrap();
    assert_eq!(table.get("format").unwrap().map(|v| v.value().to_vec()), Some(vec![newer as u8]), "restamped");
    assert!(table.get("identity").unwrap().is_none(), "the refused node wrote its identity");
    let log: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("warden_raft_log");
    assert!(
        matches!(tx.open_table(log), Err(redb::TableError::TableDoesNotExist(_))),
        "the refused node created its tables in the file"
    );
}
