//! The secrets store as the templates' provider: every value handed out is learnt by the
//! run's redactor first.

use super::*;

/// The engine's secrets store as the templates' [`template::SecretProvider`]: every value it
/// hands out is learnt by the run's [`Redactor`] first, and the store's notices (a key was
/// generated) become events.
pub(super) struct RunSecrets {
    pub(super) store: Arc<crate::secrets::SecretStore>,
    pub(super) redactor: Arc<Redactor>,
    pub(super) sink: Arc<dyn EventSink>,
}

impl RunSecrets {
    fn notices(&self) {
        for message in self.store.take_notices() {
            self.sink.emit(RunEvent::Notice { message });
        }
    }
}

impl template::SecretProvider for RunSecrets {
    fn password(
        &self,
        term: &str,
        kwargs: &[(String, String)],
    ) -> Result<crate::secret::Secret, String> {
        let r = self.store.password(term, kwargs).map_err(|e| e.to_string());
        if let Ok(s) = &r {
            self.redactor.learn(s.expose());
        }
        self.notices();
        r
    }

    fn tls_ca(&self) -> Result<String, String> {
        let r = self.store.tls_ca().map_err(|e| e.to_string());
        self.notices();
        r
    }

    fn tls_host(
        &self,
        host: &crate::secrets::TlsHost,
    ) -> Result<(String, crate::secret::Secret), String> {
        let r = self.store.tls_host(host).map_err(|e| e.to_string());
        if let Ok((_, key)) = &r {
            self.redactor.learn(key.expose());
        }
        self.notices();
        r
    }
}
