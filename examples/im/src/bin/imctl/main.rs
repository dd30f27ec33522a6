//! A command-line chat client of the messaging backend, and its load generator.
//!
//! ```text
//! imctl register alice 's3cret-pw'      # then: imctl login alice 's3cret-pw'
//! imctl send bob 'hello'                # as the user logged in last (or --as NAME)
//! imctl sync --follow                   # every new message, as it arrives
//! imctl group create friends; imctl group add 1 bob carol; imctl group send 1 'hi all'
//! imctl sessions; imctl logout [--everywhere | --id ID]; imctl passwd OLD NEW
//! imctl contact add bob 'hi'; imctl contact accept alice; imctl contacts
//! imctl group leave 1; imctl group remove 1 carol; imctl group transfer 1 bob
//! imctl bench --users 200 -c 64 -d 10s  # load: sends and syncs, with percentiles
//! ```
//!
//! Sessions (token and sync key) are kept per user in `$IMCTL_HOME` (default
//! `~/.imctl`). Errors are one line on stderr and exit status 1.

/// glibc's allocator spends a fifth of this process's CPU under load (frees on other
/// threads than the allocation's); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use svrkit_im::im::account::{CheckTokenReq, Contact, Link, LogoutReq};
use svrkit_im::im::gateway::{
    ChangePasswordReq, ContactReq, Credentials, GatewaySvrClient, GroupAddReq, GroupCreateReq,
    GroupMemberReq, GroupResp, GroupSendReq, SendReq, SyncReq,
};
use svrkit_im::im::msg::Msg;
use svrkit_runtime::{CallOptions, Config, Status};

mod bench;
mod ledger;

#[derive(Parser, Debug)]
#[command(about = "Talks to the svrkit messaging backend's gateway")]
struct Args {
    /// The gateway's address, or several, comma-separated: each user's calls then go to one
    /// of them by consistent hashing of the user (the user's SET).
    #[arg(long, global = true, default_value = "127.0.0.1:7600")]
    addr: String,
    /// Find the gateways in etcd (`http://host:port`, or a cluster's members
    /// comma-separated) instead of `--addr`, as the backend's processes find each other;
    /// users map to them by consistent hashing.
    #[arg(long, global = true, value_name = "URL")]
    etcd: Option<String>,
    /// Act as this user (logged in before) instead of the last one who logged in.
    #[arg(long = "as", global = true, value_name = "NAME")]
    as_user: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates a user.
    Register { name: String, password: String },
    /// Logs in and keeps the session for the next commands.
    Login { name: String, password: String },
    /// Sends a message to a user.
    Send {
        to: String,
        text: String,
        /// The message's id (a resend with the same id is stored once); default: random.
        #[arg(long)]
        id: Option<String>,
    },
    /// Prints the messages that arrived since the last sync.
    Sync {
        /// Keep waiting, printing messages as they arrive.
        #[arg(long)]
        follow: bool,
        /// Start after this sequence instead of the kept sync key (0: everything).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Contacts: strangers' first messages arrive as requests to accept or decline.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Lists your contacts, requests both ways and blocks.
    Contacts,
    /// Lists your live sessions (the one in use is marked `*`).
    Sessions,
    /// Ends this session (or another one, or every one) and forgets it here.
    Logout {
        /// End every session of the user, on every device.
        #[arg(long, conflicts_with = "id")]
        everywhere: bool,
        /// End the session with this id (from `imctl sessions`) instead of this one.
        #[arg(long)]
        id: Option<String>,
    },
    /// Changes your password; every other session ends.
    Passwd { old: String, new: String },
    /// Load: registers users, drives sends and syncs, prints throughput and latency.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
enum ContactCommand {
    /// Asks a user to be a contact.
    Add {
        name: String,
        /// A line for them.
        #[arg(default_value = "")]
        note: String,
    },
    /// Accepts a user's request.
    Accept { name: String },
    /// Declines a user's request.
    Decline { name: String },
    /// Ends a contact, or withdraws your request.
    Remove { name: String },
    /// Blocks a user: their requests and messages stop arriving (they are not told).
    Block { name: String },
    /// Unblocks a user.
    Unblock { name: String },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Creates a group with you in it.
    Create { name: String },
    /// Adds users to a group you are in.
    Add { group: u64, names: Vec<String> },
    /// Sends a message to every member.
    Send {
        group: u64,
        text: String,
        #[arg(long)]
        id: Option<String>,
    },
    /// Leaves a group (an owner passes it to the member who joined next).
    Leave { group: u64 },
    /// Removes a member (the owner only).
    Remove { group: u64, name: String },
    /// Makes a member the owner (the owner only).
    Transfer { group: u64, name: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imctl: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A status as a line: its message, or its code when it has none; what to do about a
/// session token the gateway no longer takes (the one `login` saved has expired, was logged
/// out elsewhere, or the backend's data was reset).
fn line(status: Status) -> String {
    let mut line = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{} ({:?})", status.message(), status.code())
    };
    if status.code() == svrkit_runtime::Code::UNAUTHENTICATED
        && status.message().contains("session token")
    {
        line += ": the session saved by `imctl login` is no longer valid; log in again with \
                 `imctl login NAME PASSWORD`";
    }
    line
}

/// Where the gateways are: `--addr` (one or more) or `--etcd`.
pub(crate) struct Gateways<'a> {
    addrs: &'a str,
    etcd: Option<&'a str>,
}

/// A client of the gateways, with `connections` connections to each, keyed by the user
/// (`CallOptions::user_key`) when there are several.
pub(crate) fn gateway(at: &Gateways<'_>, connections: usize) -> Result<GatewaySvrClient, String> {
    let name = GatewaySvrClient::DESCRIPTOR.name;
    let text = match at.etcd {
        Some(etcd) => {
            let members: Vec<String> = etcd
                .split(',')
                .map(|m| format!("\"{}\"", m.trim()))
                .collect();
            format!(
                "[discovery]\netcd = [{}]\n[services.\"{name}\"]\ndiscovery = \"etcd\"\n",
                members.join(", ")
            )
        }
        None => {
            let addrs: Vec<String> = at
                .addrs
                .split(',')
                .map(|a| format!("\"{}\"", a.trim()))
                .collect();
            format!(
                "[services.\"{name}\"]\nendpoints = [{}]\n",
                addrs.join(", ")
            )
        }
    };
    let text = format!(
        "[client]\ncaller = \"imctl\"\nconnections_per_endpoint = {}\nbalancer = \"ring\"\n{text}",
        connections.max(1)
    );
    let config = Config::parse(&text).map_err(|e| format!("--addr/--etcd: {e}"))?;
    let channel = config.channel(name).map_err(|e| e.to_string())?;
    Ok(GatewaySvrClient::new(channel))
}

/// What `login` keeps for the next commands.
#[derive(Debug)]
struct Session {
    name: String,
    uid: u64,
    token: String,
    sync_key: u64,
}

fn home() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("IMCTL_HOME") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").ok_or("neither IMCTL_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".imctl"))
}

impl Session {
    fn path(name: &str) -> Result<PathBuf, String> {
        Ok(home()?.join(format!("{name}.session")))
    }

    /// The session of `name`, or of the last user who logged in.
    fn load(name: Option<&str>) -> Result<Session, String> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => std::fs::read_to_string(home()?.join("current"))
                .map(|s| s.trim().to_owned())
                .map_err(|_| "not logged in: imctl login NAME PASSWORD")?,
        };
        let path = Session::path(&name)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|_| format!("{name} is not logged in: imctl login {name} PASSWORD"))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: no {key}; log in again", path.display()))
        };
        let number = |key: &str| -> Result<u64, String> {
            field(key)?
                .parse()
                .map_err(|_| format!("{}: bad {key}; log in again", path.display()))
        };
        Ok(Session {
            uid: number("uid")?,
            token: field("token")?,
            sync_key: number("sync_key")?,
            name,
        })
    }

    fn save(&self) -> Result<(), String> {
        let dir = home()?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = Session::path(&self.name)?;
        let text = format!(
            "uid={}\ntoken={}\nsync_key={}\n",
            self.uid, self.token, self.sync_key
        );
        write_private(&path, &text)
    }

    fn options(&self) -> CallOptions {
        CallOptions {
            user_key: Some(self.uid),
            ..CallOptions::default()
        }
    }
}

/// Writes a file only its owner can read (it holds a token).
fn write_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A random client message id.
pub(crate) fn message_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn print_msg(msg: &Msg) {
    let group = if msg.group_id == 0 {
        String::new()
    } else {
        format!(" in group {}", msg.group_id)
    };
    println!("[{}] {}{group}: {}", msg.seq, msg.from_name, msg.text);
}

fn print_contact(contact: &Contact) {
    let what = match contact.link {
        Link::CONTACT => "contact",
        Link::SENT => "request sent, waiting",
        Link::RECEIVED => "asks to be a contact",
        Link::BLOCKED => "blocked",
        _ => "none",
    };
    let note = if contact.note.is_empty() {
        String::new()
    } else {
        format!(": \"{}\"", contact.note)
    };
    println!("{}: {what}{note}", contact.name);
}

fn print_group(group: &GroupResp) {
    let members: Vec<&str> = group.members.iter().map(|m| m.as_str()).collect();
    let owner = if group.owner.is_empty() {
        String::new()
    } else {
        format!(" (owner {})", group.owner)
    };
    println!(
        "group {} \"{}\"{owner}: {}",
        group.group_id,
        group.name,
        members.join(", ")
    );
}

async fn run(args: Args) -> Result<(), String> {
    let at = Gateways {
        addrs: &args.addr,
        etcd: args.etcd.as_deref(),
    };
    let client = || gateway(&at, 1);
    let session = || Session::load(args.as_user.as_deref());
    match args.command {
        Command::Register { name, password } => {
            let request = Credentials {
                name: name.into(),
                password: password.into(),
                ..Credentials::default()
            };
            let resp = client()?.register(&request).await.map_err(line)?;
            println!("registered {} as user {}", request.name, resp.uid);
        }
        Command::Login { name, password } => {
            let request = Credentials {
                name: name.clone().into(),
                password: password.into(),
                ..Credentials::default()
            };
            let resp = client()?.login(&request).await.map_err(line)?;
            // A new login keeps the sync key of the user's earlier one on this machine.
            let sync_key = Session::load(Some(&name)).map_or(0, |s| s.sync_key);
            let session = Session {
                name: name.clone(),
                uid: resp.uid,
                token: resp.token.to_string(),
                sync_key,
            };
            session.save()?;
            write_private(&home()?.join("current"), &name)?;
            println!("logged in as {name} (user {})", resp.uid);
        }
        Command::Sessions => {
            let s = session()?;
            let request = CheckTokenReq {
                token: s.token.clone().into(),
                ..CheckTokenReq::default()
            };
            let list = client()?
                .sessions_with(&request, &s.options())
                .await
                .map_err(line)?;
            let now = svrkit_im::now_ms();
            for session in &list.sessions {
                let mark = if session.current { '*' } else { ' ' };
                let age = now.saturating_sub(session.created_at_ms) / 1000;
                let left = session.expires_at_ms.saturating_sub(now) / 1000;
                println!(
                    "{mark} {}  logged in {age} s ago, good for {left} s more",
                    session.id
                );
            }
        }
        Command::Logout { everywhere, id } => {
            let s = session()?;
            let request = LogoutReq {
                token: s.token.clone().into(),
                id: id.clone().unwrap_or_default().into(),
                everywhere,
                ..LogoutReq::default()
            };
            let resp = client()?
                .logout_with(&request, &s.options())
                .await
                .map_err(line)?;
            if id.is_none() {
                // This token is no good any more: forget it (the sync key goes with it).
                let _ = std::fs::remove_file(Session::path(&s.name)?);
                let current = home()?.join("current");
                if std::fs::read_to_string(&current).is_ok_and(|c| c.trim() == s.name) {
                    let _ = std::fs::remove_file(current);
                }
            }
            println!("{} session(s) ended", resp.ended);
        }
        Command::Passwd { old, new } => {
            let s = session()?;
            let request = ChangePasswordReq {
                token: s.token.clone().into(),
                old_password: old.into(),
                new_password: new.into(),
                ..ChangePasswordReq::default()
            };
            client()?
                .change_password_with(&request, &s.options())
                .await
                .map_err(line)?;
            println!("password changed; every other session of {} ended", s.name);
        }
        Command::Send { to, text, id } => {
            let s = session()?;
            let request = SendReq {
                token: s.token.clone().into(),
                to: to.clone().into(),
                client_msg_id: id.unwrap_or_else(message_id).into(),
                text: text.into(),
                ..SendReq::default()
            };
            let resp = client()?
                .send_with(&request, &s.options())
                .await
                .map_err(line)?;
            let note = if resp.spam_checked {
                ""
            } else {
                " (spam check skipped)"
            };
            if resp.request {
                println!("{to} is not a contact yet: sent as a contact request{note}");
            } else {
                println!("sent to {to}: seq {}{note}", resp.seq);
            }
        }
        Command::Sync { follow, from } => {
            let mut s = session()?;
            if let Some(from) = from {
                s.sync_key = from;
            }
            let client = client()?;
            let wait = Duration::from_secs(25);
            loop {
                let request = SyncReq {
                    token: s.token.clone().into(),
                    sync_key: s.sync_key,
                    limit: 100,
                    wait_ms: if follow {
                        u64::try_from(wait.as_millis()).unwrap_or(0)
                    } else {
                        0
                    },
                    ..SyncReq::default()
                };
                let options = CallOptions {
                    timeout: Some(wait + Duration::from_secs(5)),
                    ..s.options()
                };
                let resp = client.sync_with(&request, &options).await.map_err(line)?;
                for msg in &resp.msgs {
                    print_msg(msg);
                }
                if resp.sync_key != s.sync_key {
                    s.sync_key = resp.sync_key;
                    s.save()?;
                }
                if !follow && !resp.has_more {
                    break;
                }
            }
        }
        Command::Group(GroupCommand::Create { name }) => {
            let s = session()?;
            let request = GroupCreateReq {
                token: s.token.clone().into(),
                name: name.into(),
                ..GroupCreateReq::default()
            };
            print_group(
                &client()?
                    .group_create_with(&request, &s.options())
                    .await
                    .map_err(line)?,
            );
        }
        Command::Group(GroupCommand::Add { group, names }) => {
            let s = session()?;
            let request = GroupAddReq {
                token: s.token.clone().into(),
                group_id: group,
                names: names.into_iter().map(Into::into).collect(),
                ..GroupAddReq::default()
            };
            print_group(
                &client()?
                    .group_add_with(&request, &s.options())
                    .await
                    .map_err(line)?,
            );
        }
        Command::Group(GroupCommand::Send { group, text, id }) => {
            let s = session()?;
            let request = GroupSendReq {
                token: s.token.clone().into(),
                group_id: group,
                client_msg_id: id.unwrap_or_else(message_id).into(),
                text: text.into(),
                ..GroupSendReq::default()
            };
            let resp = client()?
                .group_send_with(&request, &s.options())
                .await
                .map_err(line)?;
            println!(
                "sent to group {group}: {} recipients, your copy seq {}",
                resp.recipients, resp.seq
            );
        }
        Command::Group(
            ref g @ (GroupCommand::Leave { group }
            | GroupCommand::Remove { group, .. }
            | GroupCommand::Transfer { group, .. }),
        ) => {
            let s = session()?;
            let name = match g {
                GroupCommand::Remove { name, .. } | GroupCommand::Transfer { name, .. } => {
                    name.clone()
                }
                _ => String::new(),
            };
            let request = GroupMemberReq {
                token: s.token.clone().into(),
                group_id: group,
                name: name.into(),
                ..GroupMemberReq::default()
            };
            let c = client()?;
            let options = s.options();
            let group = match g {
                GroupCommand::Leave { .. } => c.group_leave_with(&request, &options).await,
                GroupCommand::Remove { .. } => c.group_remove_with(&request, &options).await,
                _ => c.group_transfer_with(&request, &options).await,
            }
            .map_err(line)?;
            print_group(&group);
        }
        Command::Contact(command) => {
            let s = session()?;
            let (name, note, yes) = match &command {
                ContactCommand::Add { name, note } => (name, note.as_str(), false),
                ContactCommand::Accept { name } | ContactCommand::Block { name } => {
                    (name, "", true)
                }
                ContactCommand::Decline { name }
                | ContactCommand::Remove { name }
                | ContactCommand::Unblock { name } => (name, "", false),
            };
            let request = ContactReq {
                token: s.token.clone().into(),
                name: name.clone().into(),
                note: note.to_owned().into(),
                yes,
                ..ContactReq::default()
            };
            let (c, options) = (client()?, s.options());
            let contact = match command {
                ContactCommand::Add { .. } => c.contact_request_with(&request, &options).await,
                ContactCommand::Accept { .. } | ContactCommand::Decline { .. } => {
                    c.contact_answer_with(&request, &options).await
                }
                ContactCommand::Remove { .. } => c.contact_remove_with(&request, &options).await,
                ContactCommand::Block { .. } | ContactCommand::Unblock { .. } => {
                    c.contact_block_with(&request, &options).await
                }
            }
            .map_err(line)?;
            print_contact(&contact);
        }
        Command::Contacts => {
            let s = session()?;
            let request = CheckTokenReq {
                token: s.token.clone().into(),
                ..CheckTokenReq::default()
            };
            let list = client()?
                .contacts_with(&request, &s.options())
                .await
                .map_err(line)?;
            if list.contacts.is_empty() {
                println!("no contacts, requests or blocks");
            }
            for contact in &list.contacts {
                print_contact(contact);
            }
        }
        Command::Bench(bench) => bench::run(&at, bench).await?,
    }
    Ok(())
}
