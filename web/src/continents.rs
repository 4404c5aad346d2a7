//! ISO 3166-1 alpha-2 country code -> continent, for "errors by continent" in the audit
//! report (hand-written table; codes as the engine's places give them).
const TABLE: &[(&str, &str)] = &[
    ("Africa", "DZ AO BJ BW BF BI CM CV CF TD KM CG CD CI DJ EG GQ ER ET GA GM GH GN GW KE LS LR LY MG MW ML MR MU YT MA MZ NA NE NG RE RW SH ST SN SC SL SO ZA SS SD SZ TZ TG TN UG EH ZM ZW"),
    ("Asia", "AF AM AZ BH BD BT BN KH CN CY GE HK IN ID IR IQ IL JP JO KZ KW KG LA LB MO MY MV MN MM NP KP OM PK PS PH QA SA SG KR LK SY TW TJ TH TL TR TM AE UZ VN YE IO"),
    ("Europe", "AX AL AD AT BY BE BA BG HR CZ DK EE FO FI FR DE GI GR GG HU IS IE IM IT JE XK LV LI LT LU MT MD MC ME NL MK NO PL PT RO RU SM RS SK SI ES SJ SE CH UA GB VA"),
    ("North America", "AI AG AW BS BB BZ BM BQ VG CA KY CR CU CW DM DO SV GL GD GP GT HT HN JM MQ MX MS NI PA PR BL KN LC MF PM VC SX TT TC US VI UM"),
    ("South America", "AR BO BR CL CO EC FK GF GY PY PE SR UY VE"),
    ("Oceania", "AS AU CK FJ PF GU KI MH FM NR NC NZ NU NF MP PW PG PN WS SB TK TO TV VU WF CX CC"),
    ("Antarctica", "AQ BV GS HM TF"),
];

/// The continent of a country code (case-insensitive), or "Unknown".
pub fn of(country: &str) -> &'static str {
    let c = country.trim().to_ascii_uppercase();
    if c.len() != 2 {
        return "Unknown";
    }
    TABLE
        .iter()
        .find(|(_, codes)| codes.split(' ').any(|x| x == c))
        .map_or("Unknown", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_few_countries() {
        assert_eq!(super::of("fr"), "Europe");
        assert_eq!(super::of("JP"), "Asia");
        assert_eq!(super::of("BR"), "South America");
        assert_eq!(super::of("NZ"), "Oceania");
        assert_eq!(super::of("ZZ"), "Unknown");
        assert_eq!(super::of("France"), "Unknown");
    }
}
