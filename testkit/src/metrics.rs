//! Reading the service's Prometheus text exposition (`GET /metrics`).

/// The exposition text of the service at `base_url`.
pub async fn scrape(http: &reqwest::Client, base_url: &str) -> anyhow::Result<String> {
    let url = format!("{base_url}/metrics");
    let text = http
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?
        .text()
        .await?;
    Ok(text)
}

/// Sum of the samples of `name` that carry all of `labels` (0 when none does).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}
