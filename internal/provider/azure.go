package provider

// The Azure OpenAI family: OpenAI's API as Azure serves it, so everything
// but the model is read as OpenAI's (openai.go).
//
//   - Requests: the deployment in the path (/openai/deployments/{name}/...)
//     is the model when the body names none. Billed as OpenAI's.
//   - Rewrite: include_usage, as OpenAI's.
//   - Events: OpenAI chat chunks, plus chunks that carry no output and
//     need no rule of their own: prompt_filter_results (choices: [], with
//     a "content_filter_results" key that is not "content") and the
//     asynchronous filter's annotations.
//   - Error shape: ShapeOpenAI.
type azure struct{ defaults }

func (azure) name() string { return "azure" }
func (azure) routed() bool { return true }

func (azure) billing(path string) (tokens, output bool) { return openAI{}.billing(path) }

func (azure) rewrite(path string, body []byte, r Request) ([]byte, bool) {
	return openAI{}.rewrite(path, body, r)
}

// azureRequestDone names the deployment as the model. Any route's path
// may carry one (an "openai" route in front of Azure), so it is read
// whatever the route's family.
func azureRequestDone(r *requestScan, path string) {
	if dep, ok := pathSegmentAfter(path, "/deployments/"); ok && r.Model == "" {
		r.Model = dep
	}
}
