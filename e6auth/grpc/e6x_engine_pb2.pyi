from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthenticateRequest(_message.Message):
    __slots__ = ("user", "password", "userNameForImpersonation", "customIdentityClaim")
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    USERNAMEFORIMPERSONATION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMIDENTITYCLAIM_FIELD_NUMBER: _ClassVar[int]
    user: str
    password: str
    userNameForImpersonation: str
    customIdentityClaim: str
    def __init__(self, user: _Optional[str] = ..., password: _Optional[str] = ..., userNameForImpersonation: _Optional[str] = ..., customIdentityClaim: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("sessionId", "new_strategy", "engineIP")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    new_strategy: str
    engineIP: str
    def __init__(self, sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ..., engineIP: _Optional[str] = ...) -> None: ...

class ExistingQuery(_message.Message):
    __slots__ = ("queryId", "elapsedTimeMillis")
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    ELAPSEDTIMEMILLIS_FIELD_NUMBER: _ClassVar[int]
    queryId: str
    elapsedTimeMillis: int
    def __init__(self, queryId: _Optional[str] = ..., elapsedTimeMillis: _Optional[int] = ...) -> None: ...

class PrepareStatementRequest(_message.Message):
    __slots__ = ("sessionId", "schema", "queryString", "quoting", "plannerIp", "existingQuery")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    QUERYSTRING_FIELD_NUMBER: _ClassVar[int]
    QUOTING_FIELD_NUMBER: _ClassVar[int]
    PLANNERIP_FIELD_NUMBER: _ClassVar[int]
    EXISTINGQUERY_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    schema: str
    queryString: str
    quoting: str
    plannerIp: str
    existingQuery: ExistingQuery
    def __init__(self, sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., queryString: _Optional[str] = ..., quoting: _Optional[str] = ..., plannerIp: _Optional[str] = ..., existingQuery: _Optional[_Union[ExistingQuery, _Mapping]] = ...) -> None: ...

class PrepareStatementV2Request(_message.Message):
    __slots__ = ("sessionId", "schema", "catalog", "queryString", "quoting", "plannerIp", "existingQuery")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    QUERYSTRING_FIELD_NUMBER: _ClassVar[int]
    QUOTING_FIELD_NUMBER: _ClassVar[int]
    PLANNERIP_FIELD_NUMBER: _ClassVar[int]
    EXISTINGQUERY_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    schema: str
    catalog: str
    queryString: str
    quoting: str
    plannerIp: str
    existingQuery: ExistingQuery
    def __init__(self, sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., catalog: _Optional[str] = ..., queryString: _Optional[str] = ..., quoting: _Optional[str] = ..., plannerIp: _Optional[str] = ..., existingQuery: _Optional[_Union[ExistingQuery, _Mapping]] = ...) -> None: ...

class PrepareStatementResponse(_message.Message):
    __slots__ = ("engineIP", "queryId", "sessionId", "new_strategy")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    queryId: str
    sessionId: str
    new_strategy: str
    def __init__(self, engineIP: _Optional[str] = ..., queryId: _Optional[str] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class ParameterValue(_message.Message):
    __slots__ = ("index", "type", "value")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    index: int
    type: str
    value: str
    def __init__(self, index: _Optional[int] = ..., type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ExecuteStatementRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId", "shouldNotCache")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    SHOULDNOTCACHE_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    shouldNotCache: bool
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ..., shouldNotCache: _Optional[bool] = ...) -> None: ...

class ExecuteStatementV2Request(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId", "shouldNotCache", "params")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    SHOULDNOTCACHE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    shouldNotCache: bool
    params: _containers.RepeatedCompositeFieldContainer[ParameterValue]
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ..., shouldNotCache: _Optional[bool] = ..., params: _Optional[_Iterable[_Union[ParameterValue, _Mapping]]] = ...) -> None: ...

class ExecuteStatementResponse(_message.Message):
    __slots__ = ("sessionId", "new_strategy")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    new_strategy: str
    def __init__(self, sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class GetResultMetadataRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ...) -> None: ...

class GetResultMetadataResponse(_message.Message):
    __slots__ = ("resultMetaData", "sessionId", "new_strategy")
    RESULTMETADATA_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    resultMetaData: bytes
    sessionId: str
    new_strategy: str
    def __init__(self, resultMetaData: _Optional[bytes] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class GetNextResultBatchRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ...) -> None: ...

class GetNextResultBatchResponse(_message.Message):
    __slots__ = ("resultBatch", "sessionId", "new_strategy")
    RESULTBATCH_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    resultBatch: bytes
    sessionId: str
    new_strategy: str
    def __init__(self, resultBatch: _Optional[bytes] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class ClearOrCancelQueryRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId", "isDone")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    ISDONE_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    isDone: bool
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ..., isDone: _Optional[bool] = ...) -> None: ...

class ClearOrCancelQueryResponse(_message.Message):
    __slots__ = ("sessionId", "new_strategy")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    new_strategy: str
    def __init__(self, sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class ClearRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ...) -> None: ...

class ClearResponse(_message.Message):
    __slots__ = ("sessionId", "new_strategy")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    new_strategy: str
    def __init__(self, sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class CancelQueryRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ...) -> None: ...

class CancelQueryResponse(_message.Message):
    __slots__ = ("sessionId", "new_strategy")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    new_strategy: str
    def __init__(self, sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("status", "rowCount", "sessionId", "new_strategy")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROWCOUNT_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    status: bool
    rowCount: int
    sessionId: str
    new_strategy: str
    def __init__(self, status: _Optional[bool] = ..., rowCount: _Optional[int] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "queryId")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    QUERYID_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    queryId: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., queryId: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("explain", "sessionId", "new_strategy")
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    explain: str
    sessionId: str
    new_strategy: str
    def __init__(self, explain: _Optional[str] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class DryRunRequest(_message.Message):
    __slots__ = ("engineIP", "sessionId", "schema", "queryString")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    QUERYSTRING_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    schema: str
    queryString: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., queryString: _Optional[str] = ...) -> None: ...

class DryRunRequestV2(_message.Message):
    __slots__ = ("engineIP", "sessionId", "schema", "queryString", "catalog")
    ENGINEIP_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    QUERYSTRING_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    engineIP: str
    sessionId: str
    schema: str
    queryString: str
    catalog: str
    def __init__(self, engineIP: _Optional[str] = ..., sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., queryString: _Optional[str] = ..., catalog: _Optional[str] = ...) -> None: ...

class DryRunResponse(_message.Message):
    __slots__ = ("dryrunValue",)
    DRYRUNVALUE_FIELD_NUMBER: _ClassVar[int]
    dryrunValue: str
    def __init__(self, dryrunValue: _Optional[str] = ...) -> None: ...

class GetSchemaNamesRequest(_message.Message):
    __slots__ = ("sessionId",)
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    def __init__(self, sessionId: _Optional[str] = ...) -> None: ...

class GetSchemaNamesV2Request(_message.Message):
    __slots__ = ("sessionId", "catalog")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    catalog: str
    def __init__(self, sessionId: _Optional[str] = ..., catalog: _Optional[str] = ...) -> None: ...

class GetSchemaNamesResponse(_message.Message):
    __slots__ = ("schemas", "sessionId", "new_strategy")
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    schemas: _containers.RepeatedScalarFieldContainer[str]
    sessionId: str
    new_strategy: str
    def __init__(self, schemas: _Optional[_Iterable[str]] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class GetTablesRequest(_message.Message):
    __slots__ = ("sessionId", "schema")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    schema: str
    def __init__(self, sessionId: _Optional[str] = ..., schema: _Optional[str] = ...) -> None: ...

class GetTablesV2Request(_message.Message):
    __slots__ = ("sessionId", "schema", "catalog")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    schema: str
    catalog: str
    def __init__(self, sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., catalog: _Optional[str] = ...) -> None: ...

class GetTablesResponse(_message.Message):
    __slots__ = ("tables", "sessionId", "new_strategy")
    TABLES_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedScalarFieldContainer[str]
    sessionId: str
    new_strategy: str
    def __init__(self, tables: _Optional[_Iterable[str]] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class GetColumnsRequest(_message.Message):
    __slots__ = ("sessionId", "schema", "table")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    schema: str
    table: str
    def __init__(self, sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., table: _Optional[str] = ...) -> None: ...

class GetColumnsV2Request(_message.Message):
    __slots__ = ("sessionId", "schema", "table", "catalog")
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    CATALOG_FIELD_NUMBER: _ClassVar[int]
    sessionId: str
    schema: str
    table: str
    catalog: str
    def __init__(self, sessionId: _Optional[str] = ..., schema: _Optional[str] = ..., table: _Optional[str] = ..., catalog: _Optional[str] = ...) -> None: ...

class GFieldInfo(_message.Message):
    __slots__ = ("fieldName", "fieldType")
    FIELDNAME_FIELD_NUMBER: _ClassVar[int]
    FIELDTYPE_FIELD_NUMBER: _ClassVar[int]
    fieldName: str
    fieldType: str
    def __init__(self, fieldName: _Optional[str] = ..., fieldType: _Optional[str] = ...) -> None: ...

class GetColumnsResponse(_message.Message):
    __slots__ = ("fieldInfo", "sessionId", "new_strategy")
    FIELDINFO_FIELD_NUMBER: _ClassVar[int]
    SESSIONID_FIELD_NUMBER: _ClassVar[int]
    NEW_STRATEGY_FIELD_NUMBER: _ClassVar[int]
    fieldInfo: _containers.RepeatedCompositeFieldContainer[GFieldInfo]
    sessionId: str
    new_strategy: str
    def __init__(self, fieldInfo: _Optional[_Iterable[_Union[GFieldInfo, _Mapping]]] = ..., sessionId: _Optional[str] = ..., new_strategy: _Optional[str] = ...) -> None: ...

class GetCatalogesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CatalogResponse(_message.Message):
    __slots__ = ("name", "isDefault")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ISDEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    isDefault: bool
    def __init__(self, name: _Optional[str] = ..., isDefault: _Optional[bool] = ...) -> None: ...

class GetCatalogesResponse(_message.Message):
    __slots__ = ("catalogResponses",)
    CATALOGRESPONSES_FIELD_NUMBER: _ClassVar[int]
    catalogResponses: _containers.RepeatedCompositeFieldContainer[CatalogResponse]
    def __init__(self, catalogResponses: _Optional[_Iterable[_Union[CatalogResponse, _Mapping]]] = ...) -> None: ...
