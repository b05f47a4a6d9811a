//! etcd's Cluster service: MemberAdd, MemberRemove, MemberUpdate, MemberList, MemberPromote.
//!
//! Changes run on the leader through Raft's joint consensus (`raft::membership`); any member
//! accepts them and forwards. A new member's ID is derived from its peer URLs and the cluster
//! token (`identity::member_id`), so the member started afterwards with those URLs knows its own
//! ID without asking.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::{Context, status};
use crate::raft::{Member, MembershipChange};

pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> Self {
        ClusterService { ctx }
    }

    /// Runs a membership change on the leader, bounded by the request timeout like every
    /// other proposal (a change that times out may still take effect, as in etcd).
    async fn change(&self, change: MembershipChange) -> Result<Vec<pb::Member>, Status> {
        let members = tokio::time::timeout(
            self.ctx.limits.request_timeout,
            self.ctx.raft.change_members(change),
        )
        .await
        .map_err(|_| status::timed_out())?
        .map_err(|e| status::propose_error(&e))?;
        Ok(members.iter().map(to_pb).collect())
    }
}

fn to_pb(m: &Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.info.name.clone(),
        peer_ur_ls: m.info.peer_urls.clone(),
        client_ur_ls: m.info.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

fn check_urls(urls: &[String]) -> Result<(), Status> {
    if urls.is_empty() || urls.iter().any(|u| crate::config::parse_url(u).is_err()) {
        return Err(status::bad_member_urls());
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        // Membership is root's (etcd checks it before proposing, as here).
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let req = request.into_inner();
        check_urls(&req.peer_ur_ls)?;
        let id = crate::identity::member_id(&req.peer_ur_ls, &self.ctx.cluster_token);
        let members = self
            .change(MembershipChange::Add {
                id,
                peer_urls: req.peer_ur_ls.clone(),
                is_learner: req.is_learner,
            })
            .await?;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .or(Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }));
        Ok(Response::new(pb::MemberAddResponse {
            header: self.ctx.header(0),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        // Membership is root's (etcd checks it before proposing, as here).
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let id = request.into_inner().id;
        let members = self.change(MembershipChange::Remove { id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.ctx.header(0),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        // Membership is root's (etcd checks it before proposing, as here).
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let req = request.into_inner();
        check_urls(&req.peer_ur_ls)?;
        let members = self
            .change(MembershipChange::Update {
                id: req.id,
                peer_urls: req.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.ctx.header(0),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.ctx.read_barrier().await?;
        }
        let members = self.ctx.raft.members().iter().map(to_pb).collect();
        Ok(Response::new(pb::MemberListResponse {
            header: self.ctx.header(0),
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        // Membership is root's (etcd checks it before proposing, as here).
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let id = request.into_inner().id;
        let members = self.change(MembershipChange::Promote { id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.ctx.header(0),
            members,
        }))
    }
}
