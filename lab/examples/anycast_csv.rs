//! Prints, for the anycast target of a demo world (`small(30, 3, 1)` of the e2e tests), the
//! RTT each probe would measure (to its nearest instance) as `geoloc solve` input CSV.
//! No lab is brought up: the delays come from the topology.
//!
//! ```text
//! cargo run -p geoloc-lab --example anycast_csv -- [PROBES] [SEED] [INSTANCES] | geoloc solve --method cbg --input -
//! ```
use geoloc_lab::demo::{plan_targets, TargetKind, ANYCAST_HUBS};
use geoloc_lab::geo::{builtin_cities, DelayModel};
use geoloc_lab::world::{spread, Placement, World};
use geoloc_lab::Behaviour;

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (probes, seed, instances) = (arg(1, 30) as usize, arg(2, 1), arg(3, 2) as usize);
    let builtin = builtin_cities();
    let probe_cities = spread(&builtin, probes, seed)?;
    let plans = plan_targets(&builtin, 3, instances, seed)?;
    let plan = plans
        .iter()
        .find(|p| p.kind == TargetKind::Anycast)
        .expect("anycast plan");
    eprintln!(
        "instances: {:?} (hubs {:?})",
        plan.cities.iter().map(|c| &c.name).collect::<Vec<_>>(),
        ANYCAST_HUBS
    );
    let mut placements: Vec<Placement> = probe_cities
        .iter()
        .enumerate()
        .map(|(i, c)| Placement {
            name: format!("p{i:03}"),
            city: c.clone(),
            behaviour: Behaviour::Normal,
            anycast_group: None,
        })
        .collect();
    for (k, c) in plan.cities.iter().enumerate() {
        placements.push(Placement {
            name: format!("a{k}"),
            city: c.clone(),
            behaviour: Behaviour::Normal,
            anycast_group: Some("a".into()),
        });
    }
    let w = World::build(placements, &DelayModel::default(), seed, 0.0)?;
    let t = &w.topology;
    let any = std::net::IpAddr::V4(t.hosts()[probes].v4);
    println!("landmark,lat,lon,rtt_ms");
    for (i, c) in probe_cities.iter().enumerate() {
        let dst = t.route(i, any).expect("route");
        println!(
            "{},{},{},{:.3}",
            c.name.replace(',', " "),
            c.pos.lat,
            c.pos.lon,
            2.0 * t.one_way_ms(i, dst)
        );
    }
    Ok(())
}
