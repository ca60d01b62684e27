//! Conversation sessions in the state table: one partition per session, so that ending one
//! deletes everything it created and nothing else.

use async_trait::async_trait;

use super::*;
use aws_sdk_dynamodb::types::DeleteRequest;

use crate::domain::session::Session;
use crate::store::keys::{SESSION_SK, SESSION_SWEEP, SWEEP_AT, SWEEP_SHARD};

/// TTL removes a session's items this long after its idle time-out, should no sweep have.
const TTL_BACKSTOP_S: i64 = 86_400;

fn session_item(tenant: &str, session: &Session) -> Result<Item, StoreError> {
    let expires = session.expires_at_ms();
    Ok(HashMap::from([
        (PK.into(), s(keys::session_pk(tenant, &session.id))),
        (SK.into(), s(SESSION_SK)),
        ("session_id".into(), s(session.id.as_str())),
        ("agents".into(), string_list(&session.agents)),
        ("metadata".into(), json(&session.metadata)?),
        ("idle_timeout_s".into(), n(session.idle_timeout_s)),
        ("created_at".into(), n(session.created_at_ms)),
        ("last_active_at".into(), n(session.last_active_at_ms)),
        (SWEEP_SHARD.into(), s(SESSION_SWEEP)),
        (SWEEP_AT.into(), n(expires)),
        (EXPIRES_AT.into(), n(expires / 1000 + TTL_BACKSTOP_S)),
    ]))
}

fn session_record(item: &Item) -> Result<Session, StoreError> {
    let a = Attrs(item);
    Ok(Session {
        id: a.s("session_id")?.into(),
        agents: a.list("agents"),
        metadata: a.json("metadata")?.unwrap_or_default(),
        idle_timeout_s: a.n("idle_timeout_s")?,
        created_at_ms: a.n("created_at")?,
        last_active_at_ms: a.n("last_active_at")?,
    })
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn create_session(&self, tenant: &str, session: &Session) -> Result<(), StoreError> {
        self.put_new(
            session_item(tenant, session)?,
            &["created_at", "session_id"],
            || format!("session `{}`", session.id),
        )
        .await
    }

    async fn session(&self, tenant: &str, id: &str) -> Result<Option<Session>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::session_pk(tenant, id)))
            .key(SK, s(SESSION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item.as_ref().map(session_record).transpose()
    }

    async fn end_session(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let items = self.partition(keys::session_pk(tenant, id)).await?;
        if items.is_empty() {
            return Ok(false);
        }
        // The session record goes last: while any item is left, the session is still found
        // (and swept again) rather than leaving orphans behind a missing record.
        let (record, rest): (Vec<Item>, Vec<Item>) = items
            .into_iter()
            .partition(|item| Attrs(item).opt_s(SK) == Some(SESSION_SK));
        let delete = |item: &Item| {
            let key: Item = item
                .iter()
                .filter(|(k, _)| *k == PK || *k == SK)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map(|d| WriteRequest::builder().delete_request(d).build())
                .map_err(|e| StoreError::Dynamo(e.to_string()))
        };
        let rest = rest.iter().map(delete).collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.state_table, rest).await?;
        let record = record.iter().map(delete).collect::<Result<Vec<_>, _>>()?;
        self.batch_write(&self.state_table, record).await?;
        Ok(true)
    }

    async fn idle_sessions(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let due = self
            .due_in_sweeps(SESSION_SWEEP.to_string(), now_ms, limit)
            .await?;
        Ok(due
            .iter()
            .filter_map(|item| {
                let (tenant, id) = keys::parse_session_pk(Attrs(item).opt_s(PK)?)?;
                Some((tenant.to_string(), id.to_string()))
            })
            .collect())
    }
}
