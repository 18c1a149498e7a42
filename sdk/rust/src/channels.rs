//! Notification channels: create, read, change, delete, test, and their deliveries.

use jobdock_types::{Channel, CreatedChannel, Delivery, NewChannel, Page};
use reqwest::Method;

use super::{seg, with_cursor, Client, Error};

impl Client {
    /// Create a channel; for a webhook the answer holds its signing secret, shown only this
    /// once.
    pub async fn create_channel(&self, new: &NewChannel) -> Result<CreatedChannel, Error> {
        self.with_body(Method::POST, "/api/v1/channels", new).await
    }

    /// One page of channels, ordered by name.
    pub async fn list_channels(&self, cursor: Option<&str>) -> Result<Page<Channel>, Error> {
        self.get(&with_cursor("/api/v1/channels", cursor)).await
    }

    /// One channel.
    pub async fn get_channel(&self, name: &str) -> Result<Channel, Error> {
        self.get(&format!("/api/v1/channels/{}", seg(name))).await
    }

    /// Change a channel with a JSON merge patch (RFC 7396).
    pub async fn patch_channel(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Channel, Error> {
        let req = self
            .request(Method::PATCH, &format!("/api/v1/channels/{}", seg(name)))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string());
        self.send(req).await
    }

    /// Delete a channel with its undelivered alerts.
    pub async fn delete_channel(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/api/v1/channels/{}", seg(name)))
            .await
    }

    /// One page of a channel's deliveries, newest first, each with its attempts.
    pub async fn deliveries(
        &self,
        channel: &str,
        cursor: Option<&str>,
    ) -> Result<Page<Delivery>, Error> {
        let path = format!("/api/v1/channels/{}/deliveries", seg(channel));
        self.get(&with_cursor(&path, cursor)).await
    }

    /// Send a test alert through a channel; the pending delivery.
    pub async fn test_channel(&self, channel: &str) -> Result<Delivery, Error> {
        let path = format!("/api/v1/channels/{}/test", seg(channel));
        self.send(self.request(Method::POST, &path)).await
    }
}
