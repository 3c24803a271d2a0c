"""Field tables of the request messages the fake accepts, per API.

Generated from googleapis/googleapis (commit f8291d2b, Aug 2026):
``google/cloud/aiplatform/v1/*.proto`` for Vertex AI v1 and
``google/ai/generativelanguage/v1beta/*.proto`` for the Gemini API, walking every message
reachable from ``GenerateContentRequest`` and ``CountTokensRequest``.  The published v1beta
protos lag the Gemini API, so ``GEMINI_SUPPLEMENTS`` adds what googleapis/python-genai's
``_to_mldev`` converters send today (``thinkingLevel``, ``Part.mediaResolution``).

Keys are proto (snake_case) names.  A kind is ``string``/``bool``/``int``/``float``/``bytes``,
``enum:<Enum>``, ``msg:<Message>``, or ``struct``/``value``/``list`` (free-form JSON).
"""

from attrs import frozen


@frozen
class Field:
    kind: str
    card: str = ""  # "", "repeated" or "map" (map<string, kind>)
    oneof: str | None = None


F = Field

_GOOGLE_TYPES = {
    "google.type.LatLng": {"latitude": F("float"), "longitude": F("float")},
    "google.type.Interval": {"start_time": F("string"), "end_time": F("string")},
    "google.type.Date": {"year": F("int"), "month": F("int"), "day": F("int")},
}

VERTEX_V1 = {
    'Blob': {
        'mime_type': F('string', '', None),
        'data': F('bytes', '', None),
    },
    'CodeExecutionResult': {
        'outcome': F('enum:CodeExecutionResult.Outcome', '', None),
        'output': F('string', '', None),
    },
    'Content': {
        'role': F('string', '', None),
        'parts': F('msg:Part', 'repeated', None),
    },
    'CountTokensRequest': {
        'endpoint': F('string', '', None),
        'model': F('string', '', None),
        'instances': F('value', 'repeated', None),
        'contents': F('msg:Content', 'repeated', None),
        'system_instruction': F('msg:Content', '', None),
        'tools': F('msg:Tool', 'repeated', None),
        'generation_config': F('msg:GenerationConfig', '', None),
    },
    'DynamicRetrievalConfig': {
        'mode': F('enum:DynamicRetrievalConfig.Mode', '', None),
        'dynamic_threshold': F('float', '', None),
    },
    'EnterpriseWebSearch': {
        'exclude_domains': F('string', 'repeated', None),
        'blocking_confidence': F('enum:Tool.PhishBlockThreshold', '', None),
    },
    'ExecutableCode': {
        'language': F('enum:ExecutableCode.Language', '', None),
        'code': F('string', '', None),
    },
    'FileData': {
        'mime_type': F('string', '', None),
        'file_uri': F('string', '', None),
    },
    'FunctionCall': {
        'name': F('string', '', None),
        'args': F('struct', '', None),
        'partial_args': F('msg:PartialArg', 'repeated', None),
        'will_continue': F('bool', '', None),
    },
    'FunctionCallingConfig': {
        'mode': F('enum:FunctionCallingConfig.Mode', '', None),
        'allowed_function_names': F('string', 'repeated', None),
        'stream_function_call_arguments': F('bool', '', None),
    },
    'FunctionDeclaration': {
        'name': F('string', '', None),
        'description': F('string', '', None),
        'parameters': F('msg:Schema', '', None),
        'parameters_json_schema': F('value', '', None),
        'response': F('msg:Schema', '', None),
        'response_json_schema': F('value', '', None),
    },
    'FunctionResponse': {
        'name': F('string', '', None),
        'response': F('struct', '', None),
        'parts': F('msg:FunctionResponsePart', 'repeated', None),
    },
    'FunctionResponseBlob': {
        'mime_type': F('string', '', None),
        'data': F('bytes', '', None),
        'display_name': F('string', '', None),
    },
    'FunctionResponseFileData': {
        'mime_type': F('string', '', None),
        'file_uri': F('string', '', None),
        'display_name': F('string', '', None),
    },
    'FunctionResponsePart': {
        'inline_data': F('msg:FunctionResponseBlob', '', 'data'),
        'file_data': F('msg:FunctionResponseFileData', '', 'data'),
    },
    'GenerateContentRequest': {
        'model': F('string', '', None),
        'contents': F('msg:Content', 'repeated', None),
        'system_instruction': F('msg:Content', '', None),
        'cached_content': F('string', '', None),
        'tools': F('msg:Tool', 'repeated', None),
        'tool_config': F('msg:ToolConfig', '', None),
        'labels': F('string', 'map', None),
        'safety_settings': F('msg:SafetySetting', 'repeated', None),
        'model_armor_config': F('msg:ModelArmorConfig', '', None),
        'generation_config': F('msg:GenerationConfig', '', None),
    },
    'GenerationConfig': {
        'temperature': F('float', '', None),
        'top_p': F('float', '', None),
        'top_k': F('float', '', None),
        'candidate_count': F('int', '', None),
        'max_output_tokens': F('int', '', None),
        'stop_sequences': F('string', 'repeated', None),
        'response_logprobs': F('bool', '', None),
        'logprobs': F('int', '', None),
        'presence_penalty': F('float', '', None),
        'frequency_penalty': F('float', '', None),
        'seed': F('int', '', None),
        'response_mime_type': F('string', '', None),
        'response_schema': F('msg:Schema', '', None),
        'response_json_schema': F('value', '', None),
        'routing_config': F('msg:GenerationConfig.RoutingConfig', '', None),
        'audio_timestamp': F('bool', '', None),
        'response_modalities': F('enum:GenerationConfig.Modality', 'repeated', None),
        'media_resolution': F('enum:GenerationConfig.MediaResolution', '', None),
        'speech_config': F('msg:SpeechConfig', '', None),
        'thinking_config': F('msg:GenerationConfig.ThinkingConfig', '', None),
        'image_config': F('msg:ImageConfig', '', None),
    },
    'GenerationConfig.RoutingConfig': {
        'auto_mode': F('msg:GenerationConfig.RoutingConfig.AutoRoutingMode', '', 'routing_config'),
        'manual_mode': F('msg:GenerationConfig.RoutingConfig.ManualRoutingMode', '', 'routing_config'),
    },
    'GenerationConfig.RoutingConfig.AutoRoutingMode': {
        'model_routing_preference': F('enum:GenerationConfig.RoutingConfig.AutoRoutingMode.ModelRoutingPreference', '', None),
    },
    'GenerationConfig.RoutingConfig.ManualRoutingMode': {
        'model_name': F('string', '', None),
    },
    'GenerationConfig.ThinkingConfig': {
        'include_thoughts': F('bool', '', None),
        'thinking_budget': F('int', '', None),
        'thinking_level': F('enum:GenerationConfig.ThinkingConfig.ThinkingLevel', '', None),
    },
    'GoogleMaps': {
        'enable_widget': F('bool', '', None),
    },
    'GoogleSearchRetrieval': {
        'dynamic_retrieval_config': F('msg:DynamicRetrievalConfig', '', None),
    },
    'ImageConfig': {
        'image_output_options': F('msg:ImageConfig.ImageOutputOptions', '', None),
        'aspect_ratio': F('string', '', None),
        'person_generation': F('enum:ImageConfig.PersonGeneration', '', None),
        'image_size': F('string', '', None),
    },
    'ImageConfig.ImageOutputOptions': {
        'mime_type': F('string', '', None),
        'compression_quality': F('int', '', None),
    },
    'ModelArmorConfig': {
        'prompt_template_name': F('string', '', None),
        'response_template_name': F('string', '', None),
    },
    'MultiSpeakerVoiceConfig': {
        'speaker_voice_configs': F('msg:SpeakerVoiceConfig', 'repeated', None),
    },
    'Part': {
        'text': F('string', '', 'data'),
        'inline_data': F('msg:Blob', '', 'data'),
        'file_data': F('msg:FileData', '', 'data'),
        'function_call': F('msg:FunctionCall', '', 'data'),
        'function_response': F('msg:FunctionResponse', '', 'data'),
        'executable_code': F('msg:ExecutableCode', '', 'data'),
        'code_execution_result': F('msg:CodeExecutionResult', '', 'data'),
        'thought': F('bool', '', None),
        'thought_signature': F('bytes', '', None),
        'video_metadata': F('msg:VideoMetadata', '', 'metadata'),
        'media_resolution': F('msg:Part.MediaResolution', '', None),
    },
    'Part.MediaResolution': {
        'level': F('enum:Part.MediaResolution.Level', '', 'value'),
    },
    'PartialArg': {
        'null_value': F('value', '', 'delta'),
        'number_value': F('float', '', 'delta'),
        'string_value': F('string', '', 'delta'),
        'bool_value': F('bool', '', 'delta'),
        'json_path': F('string', '', None),
        'will_continue': F('bool', '', None),
    },
    'PrebuiltVoiceConfig': {
        'voice_name': F('string', '', None),
    },
    'RagRetrievalConfig': {
        'top_k': F('int', '', None),
        'filter': F('msg:RagRetrievalConfig.Filter', '', None),
        'ranking': F('msg:RagRetrievalConfig.Ranking', '', None),
    },
    'RagRetrievalConfig.Filter': {
        'vector_distance_threshold': F('float', '', 'vector_db_threshold'),
        'vector_similarity_threshold': F('float', '', 'vector_db_threshold'),
        'metadata_filter': F('string', '', None),
    },
    'RagRetrievalConfig.Ranking': {
        'rank_service': F('msg:RagRetrievalConfig.Ranking.RankService', '', 'ranking_config'),
        'llm_ranker': F('msg:RagRetrievalConfig.Ranking.LlmRanker', '', 'ranking_config'),
    },
    'RagRetrievalConfig.Ranking.LlmRanker': {
        'model_name': F('string', '', None),
    },
    'RagRetrievalConfig.Ranking.RankService': {
        'model_name': F('string', '', None),
    },
    'ReplicatedVoiceConfig': {
        'mime_type': F('string', '', None),
        'voice_sample_audio': F('bytes', '', None),
    },
    'Retrieval': {
        'vertex_ai_search': F('msg:VertexAISearch', '', 'source'),
        'vertex_rag_store': F('msg:VertexRagStore', '', 'source'),
        'disable_attribution': F('bool', '', None),
    },
    'RetrievalConfig': {
        'lat_lng': F('msg:google.type.LatLng', '', None),
        'language_code': F('string', '', None),
    },
    'SafetySetting': {
        'category': F('enum:HarmCategory', '', None),
        'threshold': F('enum:SafetySetting.HarmBlockThreshold', '', None),
        'method': F('enum:SafetySetting.HarmBlockMethod', '', None),
    },
    'Schema': {
        'type': F('enum:Type', '', None),
        'format': F('string', '', None),
        'title': F('string', '', None),
        'description': F('string', '', None),
        'nullable': F('bool', '', None),
        'default': F('value', '', None),
        'items': F('msg:Schema', '', None),
        'min_items': F('int', '', None),
        'max_items': F('int', '', None),
        'enum': F('string', 'repeated', None),
        'properties': F('msg:Schema', 'map', None),
        'property_ordering': F('string', 'repeated', None),
        'required': F('string', 'repeated', None),
        'min_properties': F('int', '', None),
        'max_properties': F('int', '', None),
        'minimum': F('float', '', None),
        'maximum': F('float', '', None),
        'min_length': F('int', '', None),
        'max_length': F('int', '', None),
        'pattern': F('string', '', None),
        'example': F('value', '', None),
        'any_of': F('msg:Schema', 'repeated', None),
        'additional_properties': F('value', '', None),
        'ref': F('string', '', None),
        'defs': F('msg:Schema', 'map', None),
    },
    'SpeakerVoiceConfig': {
        'speaker': F('string', '', None),
        'voice_config': F('msg:VoiceConfig', '', None),
    },
    'SpeechConfig': {
        'voice_config': F('msg:VoiceConfig', '', None),
        'language_code': F('string', '', None),
        'multi_speaker_voice_config': F('msg:MultiSpeakerVoiceConfig', '', None),
    },
    'Tool': {
        'function_declarations': F('msg:FunctionDeclaration', 'repeated', None),
        'retrieval': F('msg:Retrieval', '', None),
        'google_search': F('msg:Tool.GoogleSearch', '', None),
        'google_search_retrieval': F('msg:GoogleSearchRetrieval', '', None),
        'google_maps': F('msg:GoogleMaps', '', None),
        'enterprise_web_search': F('msg:EnterpriseWebSearch', '', None),
        'parallel_ai_search': F('msg:Tool.ParallelAiSearch', '', None),
        'exa_ai_search': F('msg:Tool.ExaAiSearch', '', None),
        'code_execution': F('msg:Tool.CodeExecution', '', None),
        'url_context': F('msg:UrlContext', '', None),
        'computer_use': F('msg:Tool.ComputerUse', '', None),
    },
    'Tool.CodeExecution': {
    },
    'Tool.ComputerUse': {
        'environment': F('enum:Tool.ComputerUse.Environment', '', None),
        'excluded_predefined_functions': F('string', 'repeated', None),
    },
    'Tool.ExaAiSearch': {
        'api_key': F('string', '', None),
        'custom_configs': F('struct', '', None),
    },
    'Tool.GoogleSearch': {
        'exclude_domains': F('string', 'repeated', None),
        'blocking_confidence': F('enum:Tool.PhishBlockThreshold', '', None),
    },
    'Tool.ParallelAiSearch': {
        'api_key': F('string', '', None),
        'custom_configs': F('struct', '', None),
    },
    'ToolConfig': {
        'function_calling_config': F('msg:FunctionCallingConfig', '', None),
        'retrieval_config': F('msg:RetrievalConfig', '', None),
    },
    'UrlContext': {
    },
    'VertexAISearch': {
        'datastore': F('string', '', None),
        'engine': F('string', '', None),
        'max_results': F('int', '', None),
        'filter': F('string', '', None),
        'data_store_specs': F('msg:VertexAISearch.DataStoreSpec', 'repeated', None),
    },
    'VertexAISearch.DataStoreSpec': {
        'data_store': F('string', '', None),
        'filter': F('string', '', None),
    },
    'VertexRagStore': {
        'rag_resources': F('msg:VertexRagStore.RagResource', 'repeated', None),
        'similarity_top_k': F('int', '', None),
        'vector_distance_threshold': F('float', '', None),
        'rag_retrieval_config': F('msg:RagRetrievalConfig', '', None),
    },
    'VertexRagStore.RagResource': {
        'rag_corpus': F('string', '', None),
        'rag_file_ids': F('string', 'repeated', None),
    },
    'VideoMetadata': {
        'start_offset': F('string', '', None),
        'end_offset': F('string', '', None),
        'fps': F('float', '', None),
    },
    'VoiceConfig': {
        'prebuilt_voice_config': F('msg:PrebuiltVoiceConfig', '', 'voice_config'),
        'replicated_voice_config': F('msg:ReplicatedVoiceConfig', '', 'voice_config'),
    },
}
VERTEX_V1_ENUMS = {
    'CodeExecutionResult.Outcome': ('OUTCOME_UNSPECIFIED', 'OUTCOME_OK', 'OUTCOME_FAILED', 'OUTCOME_DEADLINE_EXCEEDED'),
    'DynamicRetrievalConfig.Mode': ('MODE_UNSPECIFIED', 'MODE_DYNAMIC'),
    'ExecutableCode.Language': ('LANGUAGE_UNSPECIFIED', 'PYTHON'),
    'FunctionCallingConfig.Mode': ('MODE_UNSPECIFIED', 'AUTO', 'ANY', 'NONE', 'VALIDATED'),
    'GenerationConfig.MediaResolution': ('MEDIA_RESOLUTION_UNSPECIFIED', 'MEDIA_RESOLUTION_LOW', 'MEDIA_RESOLUTION_MEDIUM', 'MEDIA_RESOLUTION_HIGH'),
    'GenerationConfig.Modality': ('MODALITY_UNSPECIFIED', 'TEXT', 'IMAGE', 'AUDIO'),
    'GenerationConfig.RoutingConfig.AutoRoutingMode.ModelRoutingPreference': ('UNKNOWN', 'PRIORITIZE_QUALITY', 'BALANCED', 'PRIORITIZE_COST'),
    'GenerationConfig.ThinkingConfig.ThinkingLevel': ('THINKING_LEVEL_UNSPECIFIED', 'LOW', 'MEDIUM', 'HIGH', 'MINIMAL'),
    'HarmCategory': ('HARM_CATEGORY_UNSPECIFIED', 'HARM_CATEGORY_HATE_SPEECH', 'HARM_CATEGORY_DANGEROUS_CONTENT', 'HARM_CATEGORY_HARASSMENT', 'HARM_CATEGORY_SEXUALLY_EXPLICIT', 'HARM_CATEGORY_CIVIC_INTEGRITY', 'deprecated', 'HARM_CATEGORY_JAILBREAK'),
    'ImageConfig.PersonGeneration': ('PERSON_GENERATION_UNSPECIFIED', 'ALLOW_ALL', 'ALLOW_ADULT', 'ALLOW_NONE'),
    'Part.MediaResolution.Level': ('MEDIA_RESOLUTION_UNSPECIFIED', 'MEDIA_RESOLUTION_LOW', 'MEDIA_RESOLUTION_MEDIUM', 'MEDIA_RESOLUTION_HIGH', 'MEDIA_RESOLUTION_ULTRA_HIGH'),
    'SafetySetting.HarmBlockMethod': ('HARM_BLOCK_METHOD_UNSPECIFIED', 'SEVERITY', 'PROBABILITY'),
    'SafetySetting.HarmBlockThreshold': ('HARM_BLOCK_THRESHOLD_UNSPECIFIED', 'BLOCK_LOW_AND_ABOVE', 'BLOCK_MEDIUM_AND_ABOVE', 'BLOCK_ONLY_HIGH', 'BLOCK_NONE', 'OFF'),
    'Tool.ComputerUse.Environment': ('ENVIRONMENT_UNSPECIFIED', 'ENVIRONMENT_BROWSER'),
    'Tool.PhishBlockThreshold': ('PHISH_BLOCK_THRESHOLD_UNSPECIFIED', 'BLOCK_LOW_AND_ABOVE', 'BLOCK_MEDIUM_AND_ABOVE', 'BLOCK_HIGH_AND_ABOVE', 'BLOCK_HIGHER_AND_ABOVE', 'BLOCK_VERY_HIGH_AND_ABOVE', 'BLOCK_ONLY_EXTREMELY_HIGH'),
    'Type': ('TYPE_UNSPECIFIED', 'STRING', 'NUMBER', 'INTEGER', 'BOOLEAN', 'ARRAY', 'OBJECT'),
}

GEMINI_V1BETA = {
    'Blob': {
        'mime_type': F('string', '', None),
        'data': F('bytes', '', None),
    },
    'CodeExecution': {
    },
    'CodeExecutionResult': {
        'outcome': F('enum:CodeExecutionResult.Outcome', '', None),
        'output': F('string', '', None),
    },
    'Content': {
        'parts': F('msg:Part', 'repeated', None),
        'role': F('string', '', None),
    },
    'CountTokensRequest': {
        'model': F('string', '', None),
        'contents': F('msg:Content', 'repeated', None),
        'generate_content_request': F('msg:GenerateContentRequest', '', None),
    },
    'DynamicRetrievalConfig': {
        'mode': F('enum:DynamicRetrievalConfig.Mode', '', None),
        'dynamic_threshold': F('float', '', None),
    },
    'ExecutableCode': {
        'language': F('enum:ExecutableCode.Language', '', None),
        'code': F('string', '', None),
    },
    'FileData': {
        'mime_type': F('string', '', None),
        'file_uri': F('string', '', None),
    },
    'FileSearch': {
        'retrieval_resources': F('msg:FileSearch.RetrievalResource', 'repeated', None),
        'retrieval_config': F('msg:FileSearch.RetrievalConfig', '', None),
    },
    'FileSearch.RetrievalConfig': {
        'top_k': F('int', '', None),
        'metadata_filter': F('string', '', None),
    },
    'FileSearch.RetrievalResource': {
        'rag_store_name': F('string', '', None),
    },
    'FunctionCall': {
        'id': F('string', '', None),
        'name': F('string', '', None),
        'args': F('struct', '', None),
    },
    'FunctionCallingConfig': {
        'mode': F('enum:FunctionCallingConfig.Mode', '', None),
        'allowed_function_names': F('string', 'repeated', None),
    },
    'FunctionDeclaration': {
        'name': F('string', '', None),
        'description': F('string', '', None),
        'parameters': F('msg:Schema', '', None),
        'parameters_json_schema': F('value', '', None),
        'response': F('msg:Schema', '', None),
        'response_json_schema': F('value', '', None),
        'behavior': F('enum:FunctionDeclaration.Behavior', '', None),
    },
    'FunctionResponse': {
        'id': F('string', '', None),
        'name': F('string', '', None),
        'response': F('struct', '', None),
        'parts': F('msg:FunctionResponsePart', 'repeated', None),
        'will_continue': F('bool', '', None),
        'scheduling': F('enum:FunctionResponse.Scheduling', '', None),
    },
    'FunctionResponseBlob': {
        'mime_type': F('string', '', None),
        'data': F('bytes', '', None),
    },
    'FunctionResponsePart': {
        'inline_data': F('msg:FunctionResponseBlob', '', 'data'),
    },
    'GenerateContentRequest': {
        'model': F('string', '', None),
        'system_instruction': F('msg:Content', '', None),
        'contents': F('msg:Content', 'repeated', None),
        'tools': F('msg:Tool', 'repeated', None),
        'tool_config': F('msg:ToolConfig', '', None),
        'safety_settings': F('msg:SafetySetting', 'repeated', None),
        'generation_config': F('msg:GenerationConfig', '', None),
        'cached_content': F('string', '', None),
    },
    'GenerationConfig': {
        'candidate_count': F('int', '', None),
        'stop_sequences': F('string', 'repeated', None),
        'max_output_tokens': F('int', '', None),
        'temperature': F('float', '', None),
        'top_p': F('float', '', None),
        'top_k': F('int', '', None),
        'seed': F('int', '', None),
        'response_mime_type': F('string', '', None),
        'response_schema': F('msg:Schema', '', None),
        'response_json_schema': F('value', '', None),
        'response_json_schema_ordered': F('value', '', None),
        'presence_penalty': F('float', '', None),
        'frequency_penalty': F('float', '', None),
        'response_logprobs': F('bool', '', None),
        'logprobs': F('int', '', None),
        'enable_enhanced_civic_answers': F('bool', '', None),
        'response_modalities': F('enum:GenerationConfig.Modality', 'repeated', None),
        'speech_config': F('msg:SpeechConfig', '', None),
        'thinking_config': F('msg:ThinkingConfig', '', None),
        'image_config': F('msg:ImageConfig', '', None),
        'media_resolution': F('enum:GenerationConfig.MediaResolution', '', None),
    },
    'GoogleMaps': {
        'enable_widget': F('bool', '', None),
    },
    'GoogleSearchRetrieval': {
        'dynamic_retrieval_config': F('msg:DynamicRetrievalConfig', '', None),
    },
    'ImageConfig': {
        'aspect_ratio': F('string', '', None),
    },
    'MultiSpeakerVoiceConfig': {
        'speaker_voice_configs': F('msg:SpeakerVoiceConfig', 'repeated', None),
    },
    'Part': {
        'text': F('string', '', 'data'),
        'inline_data': F('msg:Blob', '', 'data'),
        'function_call': F('msg:FunctionCall', '', 'data'),
        'function_response': F('msg:FunctionResponse', '', 'data'),
        'file_data': F('msg:FileData', '', 'data'),
        'executable_code': F('msg:ExecutableCode', '', 'data'),
        'code_execution_result': F('msg:CodeExecutionResult', '', 'data'),
        'video_metadata': F('msg:VideoMetadata', '', 'metadata'),
        'thought': F('bool', '', None),
        'thought_signature': F('bytes', '', None),
        'part_metadata': F('struct', '', None),
    },
    'PrebuiltVoiceConfig': {
        'voice_name': F('string', '', None),
    },
    'RetrievalConfig': {
        'lat_lng': F('msg:google.type.LatLng', '', None),
        'language_code': F('string', '', None),
    },
    'SafetySetting': {
        'category': F('enum:HarmCategory', '', None),
        'threshold': F('enum:SafetySetting.HarmBlockThreshold', '', None),
    },
    'Schema': {
        'type': F('enum:Type', '', None),
        'format': F('string', '', None),
        'title': F('string', '', None),
        'description': F('string', '', None),
        'nullable': F('bool', '', None),
        'enum': F('string', 'repeated', None),
        'items': F('msg:Schema', '', None),
        'max_items': F('int', '', None),
        'min_items': F('int', '', None),
        'properties': F('msg:Schema', 'map', None),
        'required': F('string', 'repeated', None),
        'min_properties': F('int', '', None),
        'max_properties': F('int', '', None),
        'minimum': F('float', '', None),
        'maximum': F('float', '', None),
        'min_length': F('int', '', None),
        'max_length': F('int', '', None),
        'pattern': F('string', '', None),
        'example': F('value', '', None),
        'any_of': F('msg:Schema', 'repeated', None),
        'property_ordering': F('string', 'repeated', None),
        'default': F('value', '', None),
    },
    'SpeakerVoiceConfig': {
        'speaker': F('string', '', None),
        'voice_config': F('msg:VoiceConfig', '', None),
    },
    'SpeechConfig': {
        'voice_config': F('msg:VoiceConfig', '', None),
        'multi_speaker_voice_config': F('msg:MultiSpeakerVoiceConfig', '', None),
        'language_code': F('string', '', None),
    },
    'ThinkingConfig': {
        'include_thoughts': F('bool', '', None),
        'thinking_budget': F('int', '', None),
    },
    'Tool': {
        'function_declarations': F('msg:FunctionDeclaration', 'repeated', None),
        'google_search_retrieval': F('msg:GoogleSearchRetrieval', '', None),
        'code_execution': F('msg:CodeExecution', '', None),
        'google_search': F('msg:Tool.GoogleSearch', '', None),
        'computer_use': F('msg:Tool.ComputerUse', '', None),
        'url_context': F('msg:UrlContext', '', None),
        'file_search': F('msg:FileSearch', '', None),
        'google_maps': F('msg:GoogleMaps', '', None),
    },
    'Tool.ComputerUse': {
        'environment': F('enum:Tool.ComputerUse.Environment', '', None),
        'excluded_predefined_functions': F('string', 'repeated', None),
    },
    'Tool.GoogleSearch': {
        'time_range_filter': F('msg:google.type.Interval', '', None),
    },
    'ToolConfig': {
        'function_calling_config': F('msg:FunctionCallingConfig', '', None),
        'retrieval_config': F('msg:RetrievalConfig', '', None),
    },
    'UrlContext': {
    },
    'VideoMetadata': {
        'start_offset': F('string', '', None),
        'end_offset': F('string', '', None),
        'fps': F('float', '', None),
    },
    'VoiceConfig': {
        'prebuilt_voice_config': F('msg:PrebuiltVoiceConfig', '', 'voice_config'),
    },
}
GEMINI_V1BETA_ENUMS = {
    'CodeExecutionResult.Outcome': ('OUTCOME_UNSPECIFIED', 'OUTCOME_OK', 'OUTCOME_FAILED', 'OUTCOME_DEADLINE_EXCEEDED'),
    'DynamicRetrievalConfig.Mode': ('MODE_UNSPECIFIED', 'MODE_DYNAMIC'),
    'ExecutableCode.Language': ('LANGUAGE_UNSPECIFIED', 'PYTHON'),
    'FunctionCallingConfig.Mode': ('MODE_UNSPECIFIED', 'AUTO', 'ANY', 'NONE', 'VALIDATED'),
    'FunctionDeclaration.Behavior': ('UNSPECIFIED', 'BLOCKING', 'NON_BLOCKING'),
    'FunctionResponse.Scheduling': ('SCHEDULING_UNSPECIFIED', 'SILENT', 'WHEN_IDLE', 'INTERRUPT'),
    'GenerationConfig.MediaResolution': ('MEDIA_RESOLUTION_UNSPECIFIED', 'MEDIA_RESOLUTION_LOW', 'MEDIA_RESOLUTION_MEDIUM', 'MEDIA_RESOLUTION_HIGH'),
    'GenerationConfig.Modality': ('MODALITY_UNSPECIFIED', 'TEXT', 'IMAGE', 'AUDIO'),
    'HarmCategory': ('HARM_CATEGORY_UNSPECIFIED', 'HARM_CATEGORY_DEROGATORY', 'HARM_CATEGORY_TOXICITY', 'HARM_CATEGORY_VIOLENCE', 'HARM_CATEGORY_SEXUAL', 'HARM_CATEGORY_MEDICAL', 'HARM_CATEGORY_DANGEROUS', 'HARM_CATEGORY_HARASSMENT', 'HARM_CATEGORY_HATE_SPEECH', 'HARM_CATEGORY_SEXUALLY_EXPLICIT', 'HARM_CATEGORY_DANGEROUS_CONTENT', 'HARM_CATEGORY_CIVIC_INTEGRITY', 'deprecated'),
    'SafetySetting.HarmBlockThreshold': ('HARM_BLOCK_THRESHOLD_UNSPECIFIED', 'BLOCK_LOW_AND_ABOVE', 'BLOCK_MEDIUM_AND_ABOVE', 'BLOCK_ONLY_HIGH', 'BLOCK_NONE', 'OFF'),
    'Tool.ComputerUse.Environment': ('ENVIRONMENT_UNSPECIFIED', 'ENVIRONMENT_BROWSER'),
    'Type': ('TYPE_UNSPECIFIED', 'STRING', 'NUMBER', 'INTEGER', 'BOOLEAN', 'ARRAY', 'OBJECT', 'NULL'),
}

GEMINI_SUPPLEMENTS = {
    "ThinkingConfig": {"thinking_level": F("enum:ThinkingLevel")},
    "Part": {"media_resolution": F("value")},
}
GEMINI_V1BETA_ENUMS["ThinkingLevel"] = ("THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")
for _message, _fields in GEMINI_SUPPLEMENTS.items():
    GEMINI_V1BETA[_message] = {**GEMINI_V1BETA[_message], **_fields}
for _tables in (VERTEX_V1, GEMINI_V1BETA):
    _tables.update(_GOOGLE_TYPES)

TABLES = {"vertex": (VERTEX_V1, VERTEX_V1_ENUMS), "gemini": (GEMINI_V1BETA, GEMINI_V1BETA_ENUMS)}
