//! One Genesys Cloud org: everything Patchbay holds for it (its settings, its client with the token
//! and the rate budget, the delivery engine and the mirror it verifies by, the mirror's feed, and
//! lookups with their finds) as one value, built once at start and passed in. Nothing of an org is
//! reached through a global, so a second org is a second `Org`.

use secrecy::ExposeSecret;
use std::sync::Arc;

use std::time::Duration;

use crate::config::{GenesysSettings, Settings};
use crate::custom::CustomAttributes;
use crate::engine::Engine;
use crate::genesys::GenesysClient;
use crate::lookup::Finder;
use crate::mirror::feed::Feed;
use crate::mirror::Mirror;
use crate::secure::SecureAttributes;
use crate::service::Updater;
use crate::store::budget::{local::LocalBudget, redis::RedisBudget, Budget, CallBudget};
use crate::store::channels::{local::LocalSlots, redis::RedisSlots, ChannelSlots};
use crate::store::finds::{local::LocalFinds, redis::RedisFinds, Finds};
use crate::store::records::{local::LocalRecords, redis::RedisRecords, Records};
use crate::store::token::{local::LocalToken, redis::RedisToken, TokenStore};
use crate::store::Redis;

/// An org's stores: its budget, token, finds and channel slots.
type Stores = (
    Arc<dyn CallBudget>,
    Arc<dyn TokenStore>,
    Arc<dyn Finds>,
    Arc<dyn ChannelSlots>,
);

/// One org, whole. Cloning is cheap: clones share the client, the caches and the mirror.
#[derive(Clone)]
pub struct Org {
    /// The org's region, client, budget and retry policy, as configured.
    pub settings: Arc<GenesysSettings>,
    /// Applies every update to this org: its client, token, budget and mirror.
    pub engine: Engine,
    /// Finds this org's live conversations by user, number or external contact.
    pub finder: Finder,
    /// The mirror's feed, when `mirror.enabled`; started with the server.
    pub feed: Option<Feed>,
    /// This org's custom-attributes schemas, and what it knows of records.
    pub custom: CustomAttributes,
    /// Each of this org's conversations' secure attributes lane.
    pub secure: SecureAttributes,
}

impl Org {
    /// The org `settings` name. With `redis`, its token, budget, channel slots, finds and what is
    /// known of custom-attributes records are the deployment's; without, this process's.
    pub fn build(settings: &Settings, redis: Option<Redis>) -> Result<Self, reqwest::Error> {
        let budget = Budget {
            per_minute: settings.genesys.rate_per_minute,
        };
        let finds = LocalFinds::new(Duration::from_millis(settings.lookup.cache_ms));
        let slots = settings.mirror.max_channels;
        // Each store is this process's, or the deployment's on Redis.
        let (budget, token, finds, slots): Stores = match &redis {
            None => (
                Arc::new(LocalBudget::new(budget)),
                Arc::new(LocalToken),
                Arc::new(finds),
                Arc::new(LocalSlots::new(slots)),
            ),
            Some(r) => (
                Arc::new(RedisBudget::new(budget, r.clone())),
                Arc::new(RedisToken::new(r.clone())),
                Arc::new(RedisFinds::new(
                    finds,
                    r.clone(),
                    settings.genesys.client_secret.expose_secret().as_bytes(),
                )),
                Arc::new(RedisSlots::new(slots, r.clone())),
            ),
        };
        let records: Arc<dyn Records> = match &redis {
            None => Arc::new(LocalRecords::default()),
            Some(r) => Arc::new(RedisRecords::new(r.clone())),
        };
        let genesys = GenesysClient::new(&settings.genesys, budget, token)?;
        let mut engine = Engine::new(
            Updater::new(genesys, settings.verify.clone()),
            settings.delivery.clone(),
            settings.limits.max_attributes_bytes,
        );
        let mut feed = None;
        if settings.mirror.enabled {
            let mirror = Mirror::new(settings.mirror.max_conversations);
            engine = engine.with_mirror(
                mirror.clone(),
                settings.mirror.confirm(settings.verify.timeout_ms),
            );
            feed = Some(Feed::new(
                engine.updater().shared_genesys(),
                mirror,
                settings.mirror.clone(),
                slots,
            ));
        }
        Ok(Self {
            settings: Arc::new(settings.genesys.clone()),
            finder: Finder::new(engine.clone(), settings.lookup.clone(), finds),
            engine,
            feed,
            secure: SecureAttributes::new(settings.delivery.clone()),
            custom: CustomAttributes::new(
                Duration::from_secs(settings.custom.schema_ttl_s),
                settings.custom.divisions.clone(),
                settings.delivery.clone(),
                records,
            ),
        })
    }

    /// The org's Genesys client.
    pub fn genesys(&self) -> &GenesysClient {
        self.engine.updater().genesys()
    }

    /// The org's live mirror, when on.
    pub fn mirror(&self) -> Option<&Mirror> {
        self.engine.mirror()
    }
}
