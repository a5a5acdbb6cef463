//! Opening Typha's sync stream (the one Felix follows) on the first replica
//! that answers.

use manul_proto::v1 as pb;
use manul_proto::v1::sync_client::SyncClient;

use crate::client::{Client, MAX_MESSAGE};
use crate::error::ClientError;

impl Client {
    /// Opens a sync stream: a hello, a snapshot (unless `request` resumes
    /// after a revision the replica still holds), in-sync, then deltas and
    /// pings. A replica that is unavailable when the stream is opened is
    /// passed over for the next; once open, the stream stays on its replica
    /// (a caller that wants to go on after it breaks opens another,
    /// resuming from the last revision it saw).
    pub async fn sync(
        &self,
        request: pb::SyncRequest,
    ) -> Result<tonic::Streaming<pb::SyncMessage>, ClientError> {
        self.call_on(|channel| {
            let request = request.clone();
            async move {
                SyncClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .sync(request)
                    .await
            }
        })
        .await
    }
}
