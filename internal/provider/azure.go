package provider

import "strings"

// The Azure OpenAI family: OpenAI's API as Azure serves it, so everything
// but the model is read as OpenAI's (openai.go).
//
//   - Requests: the deployment in the path (/openai/deployments/{name}/...)
//     is the model when the body names none. Billed as OpenAI's.
//   - Usage edit: include_usage, as OpenAI's, but only where the
//     api-version takes it (azureAcceptsStreamOptions).
//   - Events: OpenAI chat chunks, plus chunks that carry no output and
//     need no rule of their own: prompt_filter_results (choices: [], with
//     a "content_filter_results" key that is not "content") and the
//     asynchronous filter's annotations.
//   - Error shape: ShapeOpenAI.
type azure struct{ defaults }

func (azure) name() string { return "azure" }
func (azure) routed() bool { return true }

func (azure) billing(path string) (tokens, output bool) { return openAI{}.billing(path) }

func (azure) usageEdit(path string, body []byte, r Request) (Edit, bool) {
	return openAI{}.usageEdit(path, body, r)
}

func (azure) acceptsUsageEdit(query string) bool { return azureAcceptsStreamOptions(query) }

// azureStreamOptionsSince is the first api-version whose chat completions
// take stream_options. Microsoft's API version lifecycle page lists
// "stream_options & include_usage added" among the changes from
// 2024-08-01-preview to 2024-09-01-preview
// (learn.microsoft.com/azure/ai-services/openai/api-version-deprecation);
// earlier versions, the GA 2024-06-01 and 2024-02-01 included, answer 400
// unknown_parameter (openai-python#1469 on 2023-05-15,
// azure-rest-api-specs#29157 on 2024-05-01-preview), and the GA 2024-10-21
// takes it (griptape#1640).
const azureStreamOptionsSince = "2024-09-01"

// azureAcceptsStreamOptions reports whether an Azure OpenAI upstream at a
// URL with this raw query takes stream_options: an api-version dated
// (YYYY-MM-DD, "-preview" or not) on or after azureStreamOptionsSince,
// or none at all, or one that is not a date (the v1 API, /openai/v1/,
// takes no api-version, or "preview" and "latest"). The first api-version
// parameter counts.
func azureAcceptsStreamOptions(query string) bool {
	v, ok := queryParam(query, "api-version")
	if !ok || len(v) < len("2006-01-02") || !isDate(v[:len("2006-01-02")]) {
		return true
	}
	return v[:len("2006-01-02")] >= azureStreamOptionsSince
}

// queryParam returns the first value of the parameter named key in a raw
// query, as written (api-version values need no unescaping), without
// allocating.
func queryParam(query, key string) (string, bool) {
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// isDate reports whether s is written as YYYY-MM-DD.
func isDate(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; i == 4 || i == 7 {
			if c != '-' {
				return false
			}
		} else if c < '0' || c > '9' {
			return false
		}
	}
	return len(s) == 10
}

// azureRequestDone names the deployment as the model. Any route's path
// may carry one (an "openai" route in front of Azure), so it is read
// whatever the route's family.
func azureRequestDone(r *requestScan, path string) {
	if dep, ok := pathSegmentAfter(path, "/deployments/"); ok && r.Model == "" {
		r.Model = dep
	}
}

// realtime: Azure OpenAI's Realtime API speaks OpenAI's events.
func (azure) realtime() realtimeProto { return realtimeByShape }
