//! `member`, `endpoint`, `alarm`, `defrag` and `move-leader`: etcdctl's cluster and
//! maintenance commands. Per-endpoint commands (`endpoint *`, `defrag`) dial each endpoint
//! by itself, as etcdctl does; `--cluster` takes the endpoints from the member list.

use std::io::{self, Write};
use std::time::Instant;

use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, HashKvRequest,
    HashKvResponse, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest,
    MoveLeaderResponse, RangeRequest, ResponseHeader, StatusRequest, StatusResponse,
    alarm_request::AlarmAction,
};

use crate::cli::{AlarmCommand, DefragArgs, EndpointCommand, MemberCommand};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::keys::go_parse_error;
use crate::print::gojson::{GoJson, Obj};
use crate::print::{Lines, Printable, Printer, Shown, Style, Table, fields_header, go_quote};
use crate::run::Session;
use crate::units::{go_duration, human_bytes};

pub async fn member(
    session: &Session,
    command: MemberCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let printer = session.printer;
    match command {
        MemberCommand::Add {
            args,
            peer_urls,
            learner,
        } => {
            let name = match args.as_slice() {
                [] => return Err(Error::BadArgs("member name not provided".to_owned())),
                [name] => name.clone(),
                more => {
                    let mut message = "too many arguments".to_owned();
                    for arg in more {
                        if arg.to_lowercase().starts_with("http") {
                            message.push_str(&format!(", did you mean --peer-urls={arg}"));
                        }
                    }
                    return Err(Error::BadArgs(message));
                }
            };
            if peer_urls.is_empty() {
                return Err(Error::BadArgs("member peer urls not provided".to_owned()));
            }
            let urls: Vec<String> = peer_urls.split(',').map(str::to_owned).collect();
            let connection = session.dial().await?;
            let request = connection.request(MemberAddRequest {
                peer_ur_ls: urls,
                is_learner: learner,
            });
            let response = connection
                .deadline(connection.cluster().member_add(request))
                .await?;
            let simple = |out: &mut dyn Write| member_added(out, &response, &name, &peer_urls);
            printer.print(out, &member_shown(&response, &simple))
        }
        MemberCommand::Remove { args } => {
            let id = member_id(&args)?;
            let connection = session.dial().await?;
            let request = connection.request(MemberRemoveRequest { id });
            let response = connection
                .deadline(connection.cluster().member_remove(request))
                .await?;
            print_change(
                printer,
                out,
                &response,
                response.header.as_ref(),
                id,
                "removed from",
            )
        }
        MemberCommand::Update { args, peer_urls } => {
            let id = member_id(&args)?;
            if peer_urls.is_empty() {
                return Err(Error::BadArgs("member peer urls not provided".to_owned()));
            }
            let connection = session.dial().await?;
            let request = connection.request(MemberUpdateRequest {
                id,
                peer_ur_ls: peer_urls.split(',').map(str::to_owned).collect(),
            });
            let response = connection
                .deadline(connection.cluster().member_update(request))
                .await?;
            print_change(
                printer,
                out,
                &response,
                response.header.as_ref(),
                id,
                "updated in",
            )
        }
        MemberCommand::Promote { args } => {
            let id = member_id(&args)?;
            let connection = session.dial().await?;
            let request = connection.request(MemberPromoteRequest { id });
            let response = connection
                .deadline(connection.cluster().member_promote(request))
                .await?;
            print_change(
                printer,
                out,
                &response,
                response.header.as_ref(),
                id,
                "promoted in",
            )
        }
        MemberCommand::List => {
            let response = member_list(&session.dial().await?).await?;
            printer.print(out, &MemberList(response))
        }
    }
}

pub(crate) async fn member_list(connection: &Connection) -> Result<MemberListResponse, Error> {
    let request = connection.request(MemberListRequest {
        linearizable: false,
    });
    connection
        .deadline(connection.cluster().member_list(request))
        .await
}

fn member_shown<'a, R>(response: &'a R, simple: Lines<'a>) -> Shown<'a, R> {
    Shown {
        response,
        simple,
        // etcdctl has no fields output for member changes.
        fields: None,
        protobuf: true,
    }
}

/// A member removed, updated or promoted: etcdctl's `Member <id> <what> cluster <id>` line,
/// or the response in the other formats.
fn print_change<R: GoJson + prost::Message>(
    printer: Printer,
    out: &mut dyn Write,
    response: &R,
    header: Option<&ResponseHeader>,
    id: u64,
    what: &str,
) -> Result<(), Error> {
    let cluster = cluster_id(header);
    let simple =
        |out: &mut dyn Write| writeln!(out, "Member {id:16x} {what} cluster {cluster:16x}");
    printer.print(out, &member_shown(response, &simple))
}

fn cluster_id(header: Option<&ResponseHeader>) -> u64 {
    header.map(|h| h.cluster_id).unwrap_or(0)
}

/// etcdctl's member ID argument: exactly one, in hex.
fn member_id(args: &[String]) -> Result<u64, Error> {
    let [id] = args else {
        return Err(Error::BadArgs("member ID is not provided".to_owned()));
    };
    u64::from_str_radix(id, 16).map_err(|e| {
        Error::BadArgs(format!(
            "bad member ID arg ({}), expecting ID in Hex",
            go_parse_error("ParseUint", id, &e)
        ))
    })
}

/// `member add`'s simple output: the line, then the environment the new member starts with.
fn member_added(
    out: &mut dyn Write,
    response: &MemberAddResponse,
    name: &str,
    peer_urls: &str,
) -> io::Result<()> {
    let new_id = response.member.as_ref().map(|m| m.id).unwrap_or(0);
    writeln!(
        out,
        "Member {new_id:16x} added to cluster {:16x}",
        cluster_id(response.header.as_ref())
    )?;
    let mut initial = Vec::new();
    for member in &response.members {
        for url in &member.peer_ur_ls {
            let member_name = if member.id == new_id {
                name
            } else {
                &member.name
            };
            initial.push(format!("{member_name}={url}"));
        }
    }
    writeln!(out)?;
    writeln!(out, "ETCD_NAME={}", go_quote(name.as_bytes()))?;
    writeln!(
        out,
        "ETCD_INITIAL_CLUSTER={}",
        go_quote(initial.join(",").as_bytes())
    )?;
    writeln!(
        out,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS={}",
        go_quote(peer_urls.as_bytes())
    )?;
    writeln!(out, "ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
}

impl GoJson for Member {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.int("ID", self.id)
            .str("name", &self.name)
            .strs("peerURLs", &self.peer_ur_ls)
            .strs("clientURLs", &self.client_ur_ls)
            .bool("isLearner", self.is_learner);
        obj.close();
    }
}

macro_rules! members_json {
    ($($response:ty),*) => {$(
        impl GoJson for $response {
            fn go_json(&self, out: &mut String) {
                let mut obj = Obj::open(out);
                obj.msg("header", self.header.as_ref()).list("members", &self.members);
                obj.close();
            }
        }
    )*};
}
members_json!(
    MemberListResponse,
    MemberRemoveResponse,
    MemberUpdateResponse,
    MemberPromoteResponse
);

impl GoJson for MemberAddResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .msg("member", self.member.as_ref())
            .list("members", &self.members);
        obj.close();
    }
}

struct MemberList(MemberListResponse);

impl MemberList {
    fn table(&self) -> Table {
        Table {
            header: vec![
                "ID",
                "Status",
                "Name",
                "Peer Addrs",
                "Client Addrs",
                "Is Learner",
            ],
            rows: self
                .0
                .members
                .iter()
                .map(|m| {
                    vec![
                        format!("{:x}", m.id),
                        if m.name.is_empty() {
                            "unstarted"
                        } else {
                            "started"
                        }
                        .to_owned(),
                        m.name.clone(),
                        m.peer_ur_ls.join(","),
                        m.client_ur_ls.join(","),
                        m.is_learner.to_string(),
                    ]
                })
                .collect(),
        }
    }
}

impl Printable for MemberList {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        simple_rows(out, &MemberList::table(self))
    }

    fn json(&self) -> Option<String> {
        Some(self.0.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.0.header.as_ref())?;
            for m in &self.0.members {
                writeln!(out, "\"ID\" : {}", m.id)?;
                writeln!(out, "\"Name\" : {}", go_quote(m.name.as_bytes()))?;
                for url in &m.peer_ur_ls {
                    writeln!(out, "\"PeerURL\" : {}", go_quote(url.as_bytes()))?;
                }
                for url in &m.client_ur_ls {
                    writeln!(out, "\"ClientURL\" : {}", go_quote(url.as_bytes()))?;
                }
                writeln!(out, "\"IsLearner\" : {}", m.is_learner)?;
                writeln!(out)?;
            }
            Ok(())
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        Some(prost::Message::encode_to_vec(&self.0))
    }

    fn table(&self) -> Option<Table> {
        Some(MemberList::table(self))
    }
}

/// A table's rows as etcdctl's simple output prints them: cells joined by ", ".
fn simple_rows(out: &mut dyn Write, table: &Table) -> io::Result<()> {
    table
        .rows
        .iter()
        .try_for_each(|row| writeln!(out, "{}", row.join(", ")))
}

/// The endpoints a per-endpoint command visits: `--endpoints`, or with `--cluster` every
/// client URL in the member list.
async fn endpoints(session: &Session, cluster: bool) -> Result<Vec<String>, Error> {
    if !cluster {
        return Ok(session.global.endpoints.clone());
    }
    let connection = session.dial().await?;
    let members = member_list(&connection).await.map_err(|e| {
        Error::Failed(format!(
            "failed to fetch endpoints from etcd cluster member list: {e}"
        ))
    })?;
    Ok(members
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

pub async fn endpoint(
    session: &Session,
    command: EndpointCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        EndpointCommand::Health(flag) => health(session, flag.cluster, out).await,
        EndpointCommand::Status(flag) => {
            let endpoints = endpoints(session, flag.cluster).await?;
            let (statuses, failure) = ask_each(endpoints, "status", |ep| async move {
                (status_of(session, &ep).await).map(|(_, status)| status)
            })
            .await;
            session.printer.print(out, &Statuses(statuses))?;
            // etcdctl exits without an `Error:` line here.
            match failure {
                Some(_) => Err(Error::Silent),
                None => Ok(()),
            }
        }
        EndpointCommand::Hashkv { cluster, rev } => {
            let endpoints = endpoints(session, cluster.cluster).await?;
            let (hashes, failure) = ask_each(endpoints, "hash", |ep| async move {
                let connection = session.dial_one(&ep).await?;
                let request = connection.request(HashKvRequest { revision: rev });
                connection
                    .deadline(connection.maintenance().hash_kv(request))
                    .await
            })
            .await;
            session.printer.print(out, &Hashes(hashes))?;
            match failure {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
    }
}

/// Asks each endpoint alone, in order: the answers, and the last failure. Each failure is
/// reported on stderr as etcdctl words it (`Failed to get the <what> of endpoint ...`).
async fn ask_each<T, F, Fut>(
    endpoints: Vec<String>,
    what: &str,
    ask: F,
) -> (Vec<(String, T)>, Option<Error>)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut answers = Vec::new();
    let mut failure = None;
    for ep in endpoints {
        match ask(ep.clone()).await {
            Ok(answer) => answers.push((ep, answer)),
            Err(e) => {
                eprintln!("Failed to get the {what} of endpoint {ep} ({e})");
                failure = Some(e);
            }
        }
    }
    (answers, failure)
}

/// The connection to `endpoint` alone, and its status.
async fn status_of(
    session: &Session,
    endpoint: &str,
) -> Result<(Connection, StatusResponse), Error> {
    let connection = session.dial_one(endpoint).await?;
    let request = connection.request(StatusRequest {});
    let status = connection
        .deadline(connection.maintenance().status(request))
        .await?;
    Ok((connection, status))
}

/// One endpoint's health: a linearizable read of the key `health` through that endpoint (a
/// permission error counts as healthy: the read reached consensus).
struct Health {
    endpoint: String,
    took: String,
    error: Option<String>,
}

async fn health(session: &Session, cluster: bool, out: &mut dyn Write) -> Result<(), Error> {
    let checks = endpoints(session, cluster)
        .await?
        .into_iter()
        .map(|ep| async move {
            let started = Instant::now();
            let result = async {
                let connection = session.dial_one(&ep).await?;
                let request = connection.request(RangeRequest {
                    key: b"health".to_vec(),
                    ..RangeRequest::default()
                });
                connection.deadline(connection.kv().range(request)).await
            }
            .await;
            let error = match result {
                Ok(_) => None,
                Err(Error::Status(m)) if m == "etcdserver: permission denied" => None,
                Err(e) => Some(e.to_string()),
            };
            Health {
                endpoint: ep,
                took: go_duration(started.elapsed()),
                error,
            }
        });
    let healths = futures::future::join_all(checks).await;
    let unhealthy = healths.iter().any(|h| h.error.is_some());
    session.printer.print(out, &Healths(healths))?;
    if unhealthy {
        return Err(Error::Failed("unhealthy cluster".to_owned()));
    }
    Ok(())
}

struct Healths(Vec<Health>);

impl Healths {
    fn table(&self) -> Table {
        Table {
            header: vec!["endpoint", "health", "took", "error"],
            rows: self
                .0
                .iter()
                .map(|h| {
                    vec![
                        h.endpoint.clone(),
                        h.error.is_none().to_string(),
                        h.took.clone(),
                        h.error.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        }
    }
}

impl Printable for Healths {
    /// etcdctl writes these lines to stderr.
    fn simple(&self, _out: &mut dyn Write, _style: Style) -> io::Result<()> {
        let mut err = io::stderr().lock();
        for h in &self.0 {
            match &h.error {
                None => writeln!(
                    err,
                    "{} is healthy: successfully committed proposal: took = {}",
                    h.endpoint, h.took
                )?,
                Some(e) => writeln!(
                    err,
                    "{} is unhealthy: failed to commit proposal: {e}",
                    h.endpoint
                )?,
            }
        }
        Ok(())
    }

    fn json(&self) -> Option<String> {
        let mut out = String::from("[");
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut obj = Obj::open(&mut out);
            obj.str_always("endpoint", &h.endpoint)
                .bool_always("health", h.error.is_none())
                .str_always("took", &h.took)
                .str("error", h.error.as_deref().unwrap_or(""));
            obj.close();
        }
        out.push(']');
        Some(out)
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            for h in &self.0 {
                writeln!(out, "\"Endpoint\" : {}", go_quote(h.endpoint.as_bytes()))?;
                writeln!(out, "\"Health\" : {}", h.error.is_none())?;
                writeln!(out, "\"Took\" : {}", h.took)?;
                writeln!(out, "\"Error\" : {}", h.error.as_deref().unwrap_or(""))?;
                writeln!(out)?;
            }
            Ok(())
        })())
    }

    fn table(&self) -> Option<Table> {
        Some(Healths::table(self))
    }
}

struct Statuses(Vec<(String, StatusResponse)>);

impl Statuses {
    fn table(&self) -> Table {
        Table {
            header: vec![
                "endpoint",
                "ID",
                "version",
                "db size",
                "is leader",
                "is learner",
                "raft term",
                "raft index",
                "raft applied index",
                "errors",
            ],
            rows: self
                .0
                .iter()
                .map(|(ep, s)| {
                    let member = s.header.as_ref().map(|h| h.member_id).unwrap_or(0);
                    vec![
                        ep.clone(),
                        format!("{member:x}"),
                        s.version.clone(),
                        human_bytes(s.db_size.max(0) as u64),
                        (s.leader == member).to_string(),
                        s.is_learner.to_string(),
                        s.raft_term.to_string(),
                        s.raft_index.to_string(),
                        s.raft_applied_index.to_string(),
                        s.errors.join(", "),
                    ]
                })
                .collect(),
        }
    }
}

/// The status fields etcdctl 3.4 knows, in its struct's order.
impl GoJson for StatusResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .str("version", &self.version)
            .int("dbSize", self.db_size)
            .int("leader", self.leader)
            .int("raftIndex", self.raft_index)
            .int("raftTerm", self.raft_term)
            .int("raftAppliedIndex", self.raft_applied_index)
            .strs("errors", &self.errors)
            .int("dbSizeInUse", self.db_size_in_use)
            .bool("isLearner", self.is_learner);
        obj.close();
    }
}

impl Printable for Statuses {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        simple_rows(out, &Statuses::table(self))
    }

    fn json(&self) -> Option<String> {
        Some(endpoint_list(&self.0, "Status"))
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            for (ep, s) in &self.0 {
                fields_header(out, s.header.as_ref())?;
                writeln!(out, "\"Version\" : {}", go_quote(s.version.as_bytes()))?;
                writeln!(out, "\"DBSize\" : {}", s.db_size)?;
                writeln!(out, "\"Leader\" : {}", s.leader)?;
                writeln!(out, "\"IsLearner\" : {}", s.is_learner)?;
                writeln!(out, "\"RaftIndex\" : {}", s.raft_index)?;
                writeln!(out, "\"RaftTerm\" : {}", s.raft_term)?;
                writeln!(out, "\"RaftAppliedIndex\" : {}", s.raft_applied_index)?;
                writeln!(out, "\"Errors\" : [{}]", s.errors.join(" "))?;
                writeln!(out, "\"Endpoint\" : {}", go_quote(ep.as_bytes()))?;
                writeln!(out)?;
            }
            Ok(())
        })())
    }

    fn table(&self) -> Option<Table> {
        Some(Statuses::table(self))
    }
}

/// `[{"Endpoint":..., "<name>":{...}}]`, etcdctl's JSON of per-endpoint answers.
fn endpoint_list<T: GoJson>(items: &[(String, T)], name: &str) -> String {
    let mut out = String::from("[");
    for (i, (ep, item)) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut obj = Obj::open(&mut out);
        obj.str_always("Endpoint", ep).msg_always(name, Some(item));
        obj.close();
    }
    out.push(']');
    out
}

impl GoJson for HashKvResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .int("hash", self.hash)
            .int("compact_revision", self.compact_revision);
        obj.close();
    }
}

struct Hashes(Vec<(String, HashKvResponse)>);

impl Hashes {
    fn table(&self) -> Table {
        Table {
            header: vec!["endpoint", "hash"],
            rows: self
                .0
                .iter()
                .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
                .collect(),
        }
    }
}

impl Printable for Hashes {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        simple_rows(out, &Hashes::table(self))
    }

    fn json(&self) -> Option<String> {
        Some(endpoint_list(&self.0, "HashKV"))
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            for (ep, h) in &self.0 {
                fields_header(out, h.header.as_ref())?;
                writeln!(out, "\"Endpoint\" : {}", go_quote(ep.as_bytes()))?;
                writeln!(out, "\"Hash\" : {}", h.hash)?;
                writeln!(out)?;
            }
            Ok(())
        })())
    }

    fn table(&self) -> Option<Table> {
        Some(Hashes::table(self))
    }
}

pub async fn alarm(
    session: &Session,
    command: AlarmCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let connection = session.dial().await?;
    let list = AlarmRequest {
        action: AlarmAction::Get as i32,
        member_id: 0,
        alarm: AlarmType::None as i32,
    };
    let mut response = connection
        .deadline(connection.maintenance().alarm(connection.request(list)))
        .await?;
    if let AlarmCommand::Disarm = command {
        // clientv3's AlarmDisarm with no member and no type: each raised alarm, one by one.
        let mut disarmed = AlarmResponse::default();
        for alarm in &response.alarms {
            let request = AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: alarm.member_id,
                alarm: alarm.alarm,
            };
            let answer = connection
                .deadline(connection.maintenance().alarm(connection.request(request)))
                .await?;
            disarmed.alarms.extend(answer.alarms);
        }
        response = disarmed;
    }
    session.printer.print(out, &Alarms(response))
}

impl GoJson for AlarmMember {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.int("memberID", self.member_id).int("alarm", self.alarm);
        obj.close();
    }
}

impl GoJson for AlarmResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .list("alarms", &self.alarms);
        obj.close();
    }
}

struct Alarms(AlarmResponse);

fn alarm_name(alarm: i32) -> &'static str {
    AlarmType::try_from(alarm)
        .map(|a| a.as_str_name())
        .unwrap_or("UNKNOWN")
}

impl Printable for Alarms {
    /// Each alarm as Go's `%+v` prints the message: its compact text form.
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        for a in &self.0.alarms {
            writeln!(
                out,
                "memberID:{} alarm:{} ",
                a.member_id,
                alarm_name(a.alarm)
            )?;
        }
        Ok(())
    }

    fn json(&self) -> Option<String> {
        Some(self.0.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.0.header.as_ref())?;
            for a in &self.0.alarms {
                writeln!(out, "\"MemberID\" : {}", a.member_id)?;
                writeln!(out, "\"AlarmType\" : {}", alarm_name(a.alarm))?;
                writeln!(out)?;
            }
            Ok(())
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        Some(prost::Message::encode_to_vec(&self.0))
    }
}

pub async fn defrag(session: &Session, args: DefragArgs, out: &mut dyn Write) -> Result<(), Error> {
    if let Some(dir) = args.data_dir {
        return Err(Error::Unsupported(format!(
            "offline defragmentation (--data-dir {}) is not supported: Cairn members \
             defragment online, run `cairnctl defrag` against the running member",
            dir.display()
        )));
    }
    let mut failed = false;
    for ep in endpoints(session, args.cluster).await? {
        let defragmented = async {
            let connection = session.dial_one(&ep).await?;
            let request = connection.request(DefragmentRequest {});
            connection
                .deadline(connection.maintenance().defragment(request))
                .await
        };
        match defragmented.await {
            // etcdctl prints these lines whatever the output format.
            Ok(_) => writeln!(out, "Finished defragmenting etcd member[{ep}]")?,
            Err(e) => {
                failed = true;
                eprintln!("Failed to defragment etcd member[{ep}] ({e})");
            }
        }
    }
    if failed {
        return Err(Error::Silent);
    }
    Ok(())
}

pub async fn move_leader(
    session: &Session,
    transferee: Option<String>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let Some(transferee) = transferee else {
        return Err(Error::BadArgs(
            "move-leader command needs 1 argument".to_owned(),
        ));
    };
    let target = u64::from_str_radix(&transferee, 16)
        .map_err(|e| Error::BadArgs(go_parse_error("ParseUint", &transferee, &e)))?;
    // The request must reach the leader: find it among the endpoints.
    let mut leader = None;
    for ep in &session.global.endpoints {
        let (connection, status) = status_of(session, ep).await?;
        let member = status.header.as_ref().map(|h| h.member_id).unwrap_or(0);
        if member == status.leader {
            leader = Some((connection, status.leader));
            break;
        }
    }
    let Some((connection, leader_id)) = leader else {
        return Err(Error::BadArgs(format!(
            "no leader endpoint given at [{}]",
            session.global.endpoints.join(" ")
        )));
    };
    let request = connection.request(MoveLeaderRequest { target_id: target });
    let response = connection
        .deadline(connection.maintenance().move_leader(request))
        .await?;
    let simple = |out: &mut dyn Write| {
        writeln!(
            out,
            "Leadership transferred from {leader_id:x} to {target:x}"
        )
    };
    // etcdctl prints a leader move as simple or JSON only.
    session.printer.print(
        out,
        &Shown {
            response: &response,
            simple: &simple,
            fields: None,
            protobuf: false,
        },
    )
}

impl GoJson for MoveLeaderResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref());
        obj.close();
    }
}
