// The printable report of a case: one self-contained HTML page (the photo
// inlined as a data: URI, styles from /print.css) for the clinic's paper
// record. It is rendered from the case as the API returns it (case_view: the
// stored report, the follow-up messages and the clinician's review), so the
// page and the JSON never disagree. A case without a review prints as a
// DRAFT with an empty decision block to sign by hand.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sg::server {

std::string print_page(const nlohmann::ordered_json& case_view, const std::vector<uint8_t>& photo_jpeg);

}  // namespace sg::server
